//! The binary's surface: help, version, exit codes and messages.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;

fn bin() -> Command {
    let mut c = Command::cargo_bin("xfer").unwrap();
    c.env_remove("XFER_SERVER").env("XFER_TOKEN", common::TOKEN);
    c
}

#[test]
fn help_lists_every_command() {
    let out = bin().arg("--help").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for cmd in ["serve", "put", "get", "ls"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
    bin().args(["put", "--help"]).assert().success().stdout(predicate::str::contains("--force"));
    bin().args(["serve", "--help"]).assert().success().stdout(predicate::str::contains("--root"));
}

#[test]
fn version_is_printed() {
    bin().arg("--version").assert().success().stdout(predicate::str::starts_with("xfer "));
}

#[test]
fn usage_errors_exit_2() {
    bin().assert().code(2);
    bin().arg("put").assert().code(2);
    bin().arg("frobnicate").assert().code(2);
}

#[test]
fn unreachable_server_is_exit_255_with_a_hint() {
    // Bind then drop: the port is almost surely closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    bin().args(["ls", "-s", &format!("127.0.0.1:{port}")]).assert().code(255).stderr(format!(
        "xfer: error: cannot connect to 127.0.0.1:{port}: connection refused (is xfer serve running?)\n"
    ));
}

#[test]
fn server_address_comes_from_the_environment() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    bin()
        .env("XFER_SERVER", format!("127.0.0.1:{port}"))
        .arg("ls")
        .assert()
        .code(255)
        .stderr(predicate::str::contains(format!("127.0.0.1:{port}")));
}

#[test]
fn serve_reports_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let root = tempfile::tempdir().unwrap();
    bin().args(["serve", "--listen", &addr, "--root"]).arg(root.path()).assert().code(1).stderr(
        predicate::str::contains(format!("xfer: error: cannot serve on {addr}: address already in use")),
    );
}
