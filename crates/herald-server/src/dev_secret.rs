//! The development secret: created once in the data dir when no JWT key is configured, so
//! that `herald serve` and `herald token` agree with no setup at all.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

pub const FILE_NAME: &str = "dev-jwt-secret";

/// Reads the data dir's development secret, creating it (and the dir) on first use.
pub fn load_or_create(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("development secret {}: {e}", path.display())),
    }
    herald::engine::sqlite::create_private(data_dir).map_err(|e| e.0)?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => file
            .write_all(secret.as_bytes())
            .map_err(|e| format!("development secret {}: {e}", path.display()))
            .map(|()| secret),
        // Another process (a `herald token` beside `herald serve`) made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("development secret {}: {e}", path.display())),
        Err(e) => Err(format!("development secret {}: {e}", path.display())),
    }
}
