//! The client's config file, `$XDG_CONFIG_HOME/xfer/config.toml` (or
//! `~/.config/xfer/config.toml`): named servers, each with an address and
//! a token file, used as `xfer -s backup put …`, as ssh's `Host` aliases.
//!
//! ```toml
//! [servers.backup]
//! address = "backup.example.net:9909"
//! token_file = "~/.config/xfer/backup.token"
//!
//! [servers.nas]
//! address = "192.168.1.20"          # port 9909 when left out
//! ```
//!
//! A `token_file` that is relative is taken from the config file's
//! directory; a leading `~/` is the home directory. Without one, a named
//! server uses the token as any other would (`--token-file`, `XFER_TOKEN`,
//! the default file).

use crate::error::Error;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file's name, beside the token file.
pub const CONFIG_FILE: &str = "config.toml";

/// What the file holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Named servers.
    #[serde(default)]
    servers: BTreeMap<String, Server>,
}

/// One named server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Server {
    /// `host[:port]`.
    address: String,
    /// The file holding its token.
    token_file: Option<String>,
}

/// A server named in the config file, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `host:port`.
    pub address: String,
    /// Its token file, if the config gives one.
    pub token_file: Option<PathBuf>,
}

/// The default place of the config file.
pub fn default_path() -> Option<PathBuf> {
    Some(crate::auth::default_token_path()?.with_file_name(CONFIG_FILE))
}

/// The server named `name` in the config file at `path`, if there is
/// such a file and name. A file that cannot be read or parsed is an error
/// naming it; a missing one names no servers.
pub fn lookup(path: &Path, name: &str) -> Result<Option<Named>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local(path, e)),
    };
    let file: ConfigFile = toml::from_str(&text)
        .map_err(|e| Error::Usage(format!("config file {}: {}", path.display(), e.message())))?;
    let Some(server) = file.servers.get(name) else { return Ok(None) };
    let base = path.parent().unwrap_or(Path::new("."));
    let token_file = server.token_file.as_deref().map(|t| expand(t, base));
    Ok(Some(Named { address: super::with_default_port(&server.address), token_file }))
}

/// `~/x` under the home directory, a relative path under `base`.
fn expand(path: &str, base: &Path) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => base.join(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_servers_are_found_with_their_token_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(CONFIG_FILE);
        std::fs::write(
            &path,
            "[servers.backup]\naddress = \"b.example:1234\"\ntoken_file = \"backup.token\"\n\n\
             [servers.nas]\naddress = \"10.0.0.2\"\n",
        )
        .unwrap();
        let backup = lookup(&path, "backup").unwrap().unwrap();
        assert_eq!(backup.address, "b.example:1234");
        assert_eq!(backup.token_file, Some(d.path().join("backup.token")));
        assert_eq!(lookup(&path, "nas").unwrap().unwrap().address, "10.0.0.2:9909");
        assert_eq!(lookup(&path, "other").unwrap(), None);
        assert_eq!(lookup(&d.path().join("none.toml"), "backup").unwrap(), None);
        std::fs::write(&path, "[servers.x]\nadress = \"typo\"\n").unwrap();
        let err = lookup(&path, "x").unwrap_err().to_string();
        assert!(err.contains("config file") && err.contains("adress"), "{err}");
    }
}
