//! `--static DIR`: serving a directory's files for plain HTTP requests.
//!
//! - `GET` and `HEAD` only (anything else: 405). Files are streamed, never
//!   read whole into memory; there is no directory listing and no `Range`.
//! - A path is percent-decoded one segment at a time. A `..` segment
//!   (written plainly or as `%2e%2e`) or an encoded `/`, `\` or NUL gets
//!   `403`; hidden names (starting with `.`) get `404`. The resolved file is
//!   then canonicalized and must still be inside the canonical root, so a
//!   symlink that leads out of it gets `403`. Only regular files are served.
//! - A directory is served by its `index.html`; asked for without the
//!   trailing `/`, it is redirected (`301`) to the path with one.
//! - Every file has `Content-Type` (by extension), `ETag` (size and
//!   modification time), `Last-Modified` and `Cache-Control: no-cache`;
//!   `If-None-Match` (or, without it, `If-Modified-Since`) gives `304`.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use httpdate::HttpDate;
use tokio::io::{AsyncReadExt, Take};
use wharf::Body;

use crate::LogLimit;

/// A directory served read-only.
#[derive(Debug)]
pub(crate) struct StaticDir {
    /// Canonical: absolute, no symlinks, no `..`.
    root: PathBuf,
}

impl StaticDir {
    /// Opens `dir`, which must exist and be a directory.
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Self { root })
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root has an `index.html` (which then replaces the chat
    /// page at `/`). Asked on every request, so adding one needs no restart.
    pub(crate) async fn has_index(&self) -> bool {
        tokio::fs::metadata(self.root.join("index.html"))
            .await
            .is_ok_and(|m| m.is_file())
    }

    /// Answers a `GET` or `HEAD` request for a file under the root.
    pub(crate) async fn serve<B>(&self, req: &Request<B>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let path = req.uri().path();
        let relative = match resolve(path) {
            Ok(p) => p,
            Err(status) => return plain(status, refusal(status)),
        };
        let (file, meta) = match self.find(&relative, path.ends_with('/')).await {
            Ok(Found::File(file, meta)) => (file, meta),
            Ok(Found::Dir) => {
                // Collapse leading slashes: `//host/` would be a redirect to
                // another site.
                let mut location = format!("/{}/", path.trim_start_matches('/'));
                if let Some(q) = req.uri().query() {
                    location.push('?');
                    location.push_str(q);
                }
                let mut res = plain(StatusCode::MOVED_PERMANENTLY, "moved\n");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
                return res;
            }
            Ok(Found::Forbidden) => return plain(StatusCode::FORBIDDEN, "forbidden\n"),
            Ok(Found::Missing) => return plain(StatusCode::NOT_FOUND, "not found\n"),
            Err(e) => return plain_error(e),
        };
        let len = meta.len();
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let etag = etag(len, modified);
        let last_modified = HttpDate::from(modified);

        let mut res = if not_modified(req.headers(), &etag, last_modified) {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else if head {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            res
        } else {
            match tokio::fs::File::open(&file).await {
                Ok(f) => Response::new(Body::new(FileBody {
                    file: f.take(len),
                    remaining: len,
                    buf: BytesMut::new(),
                })),
                Err(e) => return plain_error(e),
            }
        };
        let fresh = res.status() == StatusCode::NOT_MODIFIED;
        let h = res.headers_mut();
        if !fresh {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
        }
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&last_modified.to_string()) {
            h.insert(header::LAST_MODIFIED, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        res
    }

    /// Looks `relative` up under the root, following symlinks only as far
    /// as they stay inside it. A directory is its `index.html` when the
    /// request path ends with `/`.
    async fn find(&self, relative: &Path, slash: bool) -> io::Result<Found> {
        let path = match tokio::fs::canonicalize(self.root.join(relative)).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(e),
        };
        if !path.starts_with(&self.root) {
            return Ok(Found::Forbidden);
        }
        let meta = tokio::fs::metadata(&path).await?;
        if meta.is_dir() {
            if !slash {
                return Ok(Found::Dir);
            }
            let index = match tokio::fs::canonicalize(path.join("index.html")).await {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
                Err(e) => return Err(e),
            };
            if !index.starts_with(&self.root) {
                return Ok(Found::Forbidden);
            }
            let meta = tokio::fs::metadata(&index).await?;
            return Ok(if meta.is_file() {
                Found::File(index, meta)
            } else {
                Found::Missing
            });
        }
        // Only regular files: a FIFO or a device would block or never end.
        Ok(if meta.is_file() {
            Found::File(path, meta)
        } else {
            Found::Missing
        })
    }
}

/// What a path leads to.
enum Found {
    /// A directory asked for without the trailing `/`.
    Dir,
    File(PathBuf, std::fs::Metadata),
    /// Outside the root (through a symlink).
    Forbidden,
    Missing,
}

/// Turns a request path into a relative file path, or the status refusing
/// it.
pub(crate) fn resolve(path: &str) -> Result<PathBuf, StatusCode> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let mut out = PathBuf::new();
    for raw in rest.split('/') {
        let segment = percent_decode(raw).ok_or(StatusCode::BAD_REQUEST)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => return Err(StatusCode::FORBIDDEN),
            s if s.contains(['/', '\\', '\0']) => return Err(StatusCode::FORBIDDEN),
            s if s.starts_with('.') => return Err(StatusCode::NOT_FOUND),
            s => out.push(s),
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins;
/// `If-Modified-Since` counts only without it.
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str, modified: HttpDate) -> bool {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        let Ok(v) = v.to_str() else { return false };
        return v.split(',').map(str::trim).any(|tag| {
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag.trim_start_matches("W/")
        });
    }
    if let Some(v) = headers.get(header::IF_MODIFIED_SINCE)
        && let Some(since) = v.to_str().ok().and_then(|s| s.parse::<HttpDate>().ok())
    {
        return modified <= since;
    }
    false
}

/// The content type for a file name's extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

fn refusal(status: StatusCode) -> &'static str {
    match status {
        StatusCode::FORBIDDEN => "forbidden\n",
        StatusCode::BAD_REQUEST => "bad request path\n",
        _ => "not found\n",
    }
}

/// Warnings about files that could not be read: at most one a second.
static FILE_ERRORS: LogLimit = LogLimit::new();

fn plain_error(e: io::Error) -> Response<Body> {
    match e.kind() {
        io::ErrorKind::PermissionDenied => plain(StatusCode::FORBIDDEN, "forbidden\n"),
        // A name or path longer than the file system allows
        // (`ENAMETOOLONG`): no such file can exist.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            plain(StatusCode::NOT_FOUND, "not found\n")
        }
        _ => {
            if let Some(suppressed) = FILE_ERRORS.check(Instant::now()) {
                tracing::warn!(error = %e, suppressed, "static file error");
            }
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
        }
    }
}

/// A short `text/plain` response.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A file streamed in chunks, with its exact length known up front.
struct FileBody {
    file: Take<tokio::fs::File>,
    remaining: u64,
    buf: BytesMut,
}

/// The most read from a file at once.
const CHUNK: usize = 64 * 1024;

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut this.file),
            cx,
            &mut this.buf
        ))?;
        if n == 0 {
            // The file shrank since its length was sent: end the response
            // with an error rather than a short body.
            return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
        }
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert_eq!(resolve("/../Cargo.toml"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve("/a/%2e%2e/%2E%2E/b"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve("/a%2f..%2fb"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve("/a%5c..%5cb"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve("/a%00"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve("/.git/config"), Err(StatusCode::NOT_FOUND));
        assert_eq!(resolve("/%zz"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(resolve("*"), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn paths_stay_relative() {
        assert_eq!(resolve("/"), Ok(PathBuf::new()));
        assert_eq!(resolve("//etc/passwd"), Ok(PathBuf::from("etc/passwd")));
        assert_eq!(resolve("/a/./b%20c.txt"), Ok(PathBuf::from("a/b c.txt")));
    }

    #[test]
    fn conditionals() {
        let date: HttpDate = "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap();
        let later: HttpDate = "Sun, 06 Nov 1994 08:49:38 GMT".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, "\"1-2\"", date));
        h.insert(header::IF_MODIFIED_SINCE, date.to_string().parse().unwrap());
        assert!(not_modified(&h, "\"1-2\"", date));
        assert!(!not_modified(&h, "\"1-2\"", later));
        h.insert(header::IF_NONE_MATCH, "\"0-0\", W/\"1-2\"".parse().unwrap());
        assert!(not_modified(&h, "\"1-2\"", later));
        h.insert(header::IF_NONE_MATCH, "\"0-0\"".parse().unwrap());
        assert!(!not_modified(&h, "\"1-2\"", date), "If-None-Match wins");
    }
}
