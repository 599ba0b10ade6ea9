//! Files of secrets (token keys, NATS seeds, TLS keys): written readable by their owner only,
//! and refused when others may read them.

use std::io::Write as _;
use std::path::Path;

/// Creates `path` (it must not exist) readable and writable by this user only.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Reads a file of secrets, refusing one that others may read or its group may write (group
/// read is allowed, for a service group).
pub fn read_private_file(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|io| io.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o027 != 0 {
            return Err(format!(
                "mode {mode:03o} lets others read or write the secrets; `chmod 600` it"
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    std::fs::read_to_string(path).map_err(|io| io.to_string())
}
