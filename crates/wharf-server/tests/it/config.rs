//! The command line, environment and file, through the real binary
//! (`--print-config` prints the resolved settings and exits), so the
//! environment is the child's own and the tests never touch this process's.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::TempDir;

/// Runs `wharf` with `args` and only the `WHARF_*` variables in `env`,
/// failing the test if it does not exit within a few seconds.
fn wharf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn wharf");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wharf {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "wharf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn has(printed: &str, line: &str) -> bool {
    printed.lines().any(|l| l == line)
}

#[test]
fn defaults_without_any_setting() {
    let printed = stdout(&wharf(&["--print-config"], &[]));
    for line in [
        "listen = \"127.0.0.1:3400\"",
        "mode = \"chat\"",
        "max-message-size = 65536",
        "max-frame-size = 65536",
        "max-backpressure = 1048576",
        "handshake-timeout = \"10s\"",
        "close-timeout = \"10s\"",
        "write-timeout = \"30s\"",
        "ping-interval = \"30s\"",
        "ping-timeout = \"20s\"",
        "log-level = \"info\"",
    ] {
        assert!(has(&printed, line), "{line:?} not in\n{printed}");
    }
}

#[test]
fn message_limits_fit_the_mode_unless_set() {
    let echo = stdout(&wharf(&["--print-config", "--mode", "echo"], &[]));
    assert!(has(&echo, "max-message-size = 1048576"), "{echo}");
    assert!(has(&echo, "max-frame-size = 1048576"), "{echo}");
    let chat = stdout(&wharf(
        &["--print-config", "--max-message-size", "2MiB"],
        &[],
    ));
    assert!(has(&chat, "max-message-size = 2097152"), "{chat}");
    assert!(has(&chat, "max-frame-size = 65536"), "{chat}");
    let off = stdout(&wharf(&["--print-config", "--write-timeout", "off"], &[]));
    assert!(has(&off, "write-timeout = \"off\""), "{off}");
}

#[test]
fn command_line_beats_environment_beats_file_beats_defaults() {
    let dir = TempDir::new("precedence");
    let file = dir.write(
        "wharf.toml",
        "# every layer sets some of these\n\
         listen = \"127.0.0.1:5000\"\n\
         mode = \"echo\"\n\
         max-message-size = \"64KiB\"\n\
         close-timeout = \"3s\"\n\
         log_level = \"debug\"\n",
    );
    let file = file.to_str().expect("utf-8 path");
    let out = wharf(
        &[
            "--config",
            file,
            "--listen",
            "127.0.0.1:7000",
            "--print-config",
        ],
        &[
            ("WHARF_LISTEN", "127.0.0.1:6000"),
            ("WHARF_MODE", "broadcast"),
            ("WHARF_CLOSE_TIMEOUT", "4s"),
        ],
    );
    let printed = stdout(&out);
    // The command line beats the environment and the file.
    assert!(has(&printed, "listen = \"127.0.0.1:7000\""), "{printed}");
    // The environment beats the file.
    assert!(has(&printed, "mode = \"broadcast\""), "{printed}");
    assert!(has(&printed, "close-timeout = \"4s\""), "{printed}");
    // The file beats the defaults.
    assert!(has(&printed, "max-message-size = 65536"), "{printed}");
    assert!(has(&printed, "log-level = \"debug\""), "{printed}");
    // The defaults fill the rest.
    assert!(has(&printed, "max-frame-size = 1048576"), "{printed}");
    assert!(has(&printed, "ping-interval = \"30s\""), "{printed}");

    // The file can come from the environment too.
    let printed = stdout(&wharf(&["--print-config"], &[("WHARF_CONFIG", file)]));
    assert!(has(&printed, "listen = \"127.0.0.1:5000\""), "{printed}");
    assert!(has(&printed, "mode = \"echo\""), "{printed}");
}

#[test]
fn invalid_file_value_names_the_key_and_line() {
    let dir = TempDir::new("invalid");
    let file = dir.write(
        "wharf.toml",
        "mode = \"chat\"\n\nmax-message-size = \"12 parsecs\"\n",
    );
    let out = wharf(&["--config", file.to_str().expect("utf-8")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("`max-message-size`"), "{err}");
    assert!(err.contains("12 parsecs"), "{err}");
    assert!(err.contains("wharf.toml"), "{err}");
}

#[test]
fn unknown_key_and_syntax_errors_name_the_line() {
    let dir = TempDir::new("unknown");
    let file = dir.write(
        "unknown.toml",
        "listen = \"127.0.0.1:1\"\nmoed = \"echo\"\n",
    );
    let out = wharf(&["--config", file.to_str().expect("utf-8")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("`moed`"), "{err}");
    assert!(err.contains("unknown key"), "{err}");

    let file = dir.write("syntax.toml", "mode = \"chat\"\nlisten = \n");
    let out = wharf(&["--config", file.to_str().expect("utf-8")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");

    let file = dir.write("type.toml", "\nping-timeout = true\n");
    let out = wharf(&["--config", file.to_str().expect("utf-8")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("`ping-timeout`"),
        "{err}"
    );
}

#[test]
fn invalid_flags_and_environment_are_refused() {
    let out = wharf(&["--max-frame-size", "lots"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-frame-size"), "{err}");

    let out = wharf(&["--print-config"], &[("WHARF_MODE", "karaoke")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("karaoke"));

    let out = wharf(&["--config", "/nonexistent/wharf.toml"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/wharf.toml"), "{err}");
}

#[test]
fn help_documents_every_setting() {
    let help = stdout(&wharf(&["--help"], &[]));
    for flag in [
        "--listen",
        "--config",
        "--static",
        "--mode",
        "--max-message-size",
        "--max-frame-size",
        "--max-fragments",
        "--max-backpressure",
        "--slow-client",
        "--handshake-timeout",
        "--close-timeout",
        "--ping-interval",
        "--ping-timeout",
        "--log-level",
        "--print-config",
        "WHARF_LISTEN",
        "WHARF_LOG",
        "WHARF_MODE",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
}

#[test]
fn legacy_drafts_from_the_environment_and_the_command_line() {
    let off = stdout(&wharf(&["--print-config"], &[]));
    assert!(off.contains("legacy-drafts = false\n"), "{off}");
    let env = [("WHARF_LEGACY_DRAFTS", "true")];
    let on = stdout(&wharf(&["--print-config"], &env));
    assert!(on.contains("legacy-drafts = true\n"), "{on}");
    let flag = stdout(&wharf(&["--print-config", "--legacy-drafts=false"], &env));
    assert!(flag.contains("legacy-drafts = false\n"), "{flag}");
}
