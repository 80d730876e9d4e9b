//! What deploying xfer needs: named servers in the client's config file
//! (as ssh's Host aliases), completions and man pages from the binary.

mod common;

use common::{xfer, TestServer, TOKEN};
use predicates::prelude::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_named_server_in_the_config_file_gives_its_address_and_token() {
    let server = TestServer::start();
    fs::write(server.path("here.txt"), b"x").unwrap();
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("box.token");
    fs::write(&token, format!("{TOKEN}\n")).unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!("[servers.box]\naddress = \"{}\"\ntoken_file = \"box.token\"\n\n[servers.wrong]\naddress = \"{}\"\ntoken_file = \"nope.token\"\n", server.addr, server.addr),
    )
    .unwrap();
    let client = || {
        let mut cmd = xfer(server.addr, home.path());
        cmd.env_remove("XFER_TOKEN").env_remove("XFER_SERVER").env("XFER_CONFIG", &config);
        cmd
    };
    client().args(["-s", "box", "ls"]).assert().success().stdout(predicate::str::contains("here.txt"));
    client().args(["-s", "wrong", "ls"]).assert().code(255).stderr(predicate::str::contains("nope.token"));
    // Not a name there: a host, port 9909.
    client().args(["-s", "127.0.0.1", "ls"]).timeout(std::time::Duration::from_secs(20)).assert().code(255);
    fs::write(&config, "[servers.box]\nadress = \"typo\"\n").unwrap();
    client()
        .args(["-s", "box", "ls"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("config file").and(predicate::str::contains("adress")));
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    let work = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out =
            assert_cmd::Command::cargo_bin("xfer").unwrap().args(["completions", shell]).assert().success();
        assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("md5sum"), "{shell}");
    }
    assert_cmd::Command::cargo_bin("xfer")
        .unwrap()
        .arg("man")
        .arg(work.path().join("man"))
        .assert()
        .success();
    let page = fs::read_to_string(work.path().join("man/xfer-get.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("resume"), "{page}");
}

#[test]
fn the_systemd_unit_verifies() {
    // systemd-analyze checks every key and that ExecStart's binary runs.
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed here: the unit is not checked");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let unit = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/xfer.service")).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("xfer");
    let unit = unit.replace("/usr/local/bin/xfer", bin.to_str().unwrap());
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    assert!(
        unit.contains("ProtectHome=yes")
            && unit.contains("PrivateTmp=yes")
            && unit.contains("Restart=on-failure")
    );
    let path = work.path().join("xfer.service");
    fs::write(&path, unit).unwrap();
    let out = std::process::Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Complaints about the host's own units are not ours.
    let ours: Vec<_> = stderr.lines().filter(|l| l.contains("xfer.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .ok_or(())
}
