//! Permission bits and modification times, as both sides give them to
//! what they make.

use std::os::unix::fs::PermissionsExt;

/// Permission bits carried for files and directories: rwx for all three
/// classes. setuid, setgid and sticky are never carried.
pub const MODE_MASK: u32 = 0o777;

/// Sets a file's (or directory's) permission bits, masked with
/// [`MODE_MASK`], and modification time.
pub fn apply_meta(file: &std::fs::File, mode: u32, mtime: i64) -> std::io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode & MODE_MASK))?;
    set_mtime(file, mtime)
}

/// [`apply_meta`] for a file just created with `mode`: the permission
/// bits are set only if the umask took some away (one syscall fewer per
/// file of a tree in the common case).
pub fn apply_created_meta(file: &std::fs::File, mode: u32, mtime: i64) -> std::io::Result<()> {
    match umask() {
        Some(mask) if mode & MODE_MASK & mask == 0 => set_mtime(file, mtime),
        _ => apply_meta(file, mode, mtime),
    }
}

/// The process's umask, read once from /proc (reading it with `umask(2)`
/// would change it for a moment under other threads). `None` if unknown.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Sets a file's (or directory's) modification time.
pub fn set_mtime(file: &std::fs::File, mtime: i64) -> std::io::Result<()> {
    file.set_times(std::fs::FileTimes::new().set_modified(mtime_of(mtime)))
}

/// The time [`set_mtime`] gives for `mtime` seconds: whole seconds, none
/// before the epoch.
pub fn mtime_of(mtime: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64)
}
