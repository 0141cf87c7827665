//! `--static DIR` and the embedded chat page.

use wharf_server::Mode;

use crate::util::{TempDir, TestServer, config, start};

/// A root with a few files, a subdirectory, a secret beside the root and a
/// symlink pointing at it.
async fn site(name: &str) -> (TempDir, TestServer) {
    let tmp = TempDir::new(name);
    tmp.write("secret.txt", "TOP SECRET");
    tmp.write("www/hello.txt", "hello, world\n");
    tmp.write("www/style.css", "body { color: red }\n");
    tmp.write("www/app.js", "console.log(1)\n");
    tmp.write("www/data.bin", "\u{1}\u{2}");
    tmp.write("www/docs/index.html", "<h1>docs</h1>\n");
    tmp.write("www/metrics", "not the metrics\n");
    tmp.write("www/.env", "PASSWORD=1\n");
    #[cfg(unix)]
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), tmp.path().join("www/escape"))
        .expect("symlink");
    let mut c = config(Mode::Chat);
    c.static_dir = Some(tmp.path().join("www"));
    let server = start(c).await;
    (tmp, server)
}

#[tokio::test]
async fn files_have_content_types_and_validators() {
    let (_tmp, server) = site("types").await;
    for (path, ty) in [
        ("/hello.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/data.bin", "application/octet-stream"),
        ("/docs/", "text/html; charset=utf-8"),
    ] {
        let res = server.request("GET", path, &[]).await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.header("content-type"), Some(ty), "{path}");
        assert!(res.header("etag").is_some(), "{path}");
        assert!(res.header("last-modified").is_some(), "{path}");
    }
    let res = server.request("GET", "/hello.txt", &[]).await;
    assert_eq!(res.body_text(), "hello, world\n");
    assert_eq!(res.header("content-length"), Some("13"));

    // HEAD: the same headers, no body.
    let res = server.request("HEAD", "/hello.txt", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("13"));
    assert!(res.body.is_empty());

    // A directory without its slash is redirected to it.
    let res = server.request("GET", "/docs", &[]).await;
    assert_eq!((res.status, res.header("location")), (301, Some("/docs/")));
    server.stop().await;
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let (_tmp, server) = site("conditional").await;
    let first = server.request("GET", "/style.css", &[]).await;
    let etag = first.header("etag").expect("etag").to_owned();
    let modified = first
        .header("last-modified")
        .expect("last-modified")
        .to_owned();

    let res = server
        .request("GET", "/style.css", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(res.status, 304);
    assert!(res.body.is_empty());
    assert_eq!(res.header("etag"), Some(etag.as_str()));

    let res = server
        .request("GET", "/style.css", &[("If-Modified-Since", &modified)])
        .await;
    assert_eq!(res.status, 304);

    let res = server
        .request(
            "GET",
            "/style.css",
            &[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
        )
        .await;
    assert_eq!(res.status, 200);

    // A different ETag wins over a matching date.
    let res = server
        .request(
            "GET",
            "/style.css",
            &[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", &modified),
            ],
        )
        .await;
    assert_eq!(res.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn traversal_is_refused() {
    let (_tmp, server) = site("traversal").await;
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/escape",
        "/.env",
        "/%2fetc%2fpasswd",
    ] {
        let res = server
            .raw(&format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert!(
            res.status == 403 || res.status == 404 || res.status == 400,
            "{path}: {}",
            res.status
        );
        let body = res.body_text();
        assert!(
            !body.contains("SECRET") && !body.contains("PASSWORD"),
            "{path} leaked"
        );
    }
    // The repository's own Cargo.toml, the brief's example, is out of reach.
    let res = server
        .raw("GET /../Cargo.toml HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(res.status, 403);
    let res = server
        .raw("GET /%2e%2e/Cargo.toml HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(res.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn reserved_paths_are_never_shadowed() {
    let (tmp, server) = site("reserved").await;
    let res = server.request("GET", "/metrics", &[]).await;
    assert!(res.body_text().contains("wharf_connections_open"));
    let res = server.request("GET", "/healthz", &[]).await;
    assert_eq!(res.body_text(), "ok");

    // Without index.html in the directory, / is the chat page ...
    let res = server.request("GET", "/", &[]).await;
    assert_eq!(res.status, 200);
    assert!(res.body_text().contains("wharf chat"));
    // ... and with one, / is the directory's page; the chat page stays at
    // /_wharf/chat.
    tmp.write("www/index.html", "<h1>my site</h1>\n");
    let res = server.request("GET", "/", &[]).await;
    assert_eq!(res.body_text(), "<h1>my site</h1>\n");
    let res = server.request("GET", "/_wharf/chat", &[]).await;
    assert!(res.body_text().contains("wharf chat"));
    server.stop().await;
}

#[tokio::test]
async fn the_chat_page_and_its_assets_are_embedded() {
    let server = start(config(Mode::Chat)).await;
    let page = server.request("GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.header("content-security-policy").is_some());
    for (path, ty) in [
        ("/_wharf/chat.js", "text/javascript; charset=utf-8"),
        ("/_wharf/chat.css", "text/css; charset=utf-8"),
    ] {
        assert!(page.body_text().contains(path), "the page links {path}");
        let res = server.request("GET", path, &[]).await;
        assert_eq!((res.status, res.header("content-type")), (200, Some(ty)));
        let etag = res.header("etag").expect("etag").to_owned();
        let res = server
            .request("GET", path, &[("If-None-Match", &etag)])
            .await;
        assert_eq!(res.status, 304);
    }
    server.stop().await;
}

/// Hostile paths get a client error, never a server error (which is
/// logged): a name longer than any file system allows is not found, a
/// target over the limit is too long.
#[tokio::test]
async fn overlong_paths_get_404_or_414() {
    let (_tmp, server) = site("overlong").await;
    let long_name = format!("/{}", "a".repeat(300));
    let res = server.request("GET", &long_name, &[]).await;
    assert_eq!(res.status, 404, "{}", res.body_text());
    let long_path = "/abcdefg".repeat(600);
    let res = server.request("GET", &long_path, &[]).await;
    assert_eq!(res.status, 404, "{}", res.body_text());
    let too_long = format!("/{}", "b".repeat(9 * 1024));
    let res = server.request("GET", &too_long, &[]).await;
    assert_eq!(res.status, 414, "{}", res.body_text());
    server.stop().await;
}
