//! The data dir's safety: private permissions (0700 for a dir Herald creates, 0600 for the
//! database) and one server per dir (an exclusive lock on `herald.lock`, held for the node's
//! life).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::engine::EngineError;

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "herald.lock";

/// Creates `dir` (and its parents) if missing, readable by its owner only.
pub fn create_private(dir: &Path) -> Result<(), EngineError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| EngineError(format!("data dir {}: {e}", dir.display())))
}

/// Makes `file` readable and writable by its owner only, creating it empty if missing, so
/// SQLite's WAL and shared-memory files (which take the database's mode) are private too.
pub fn make_private(file: &Path) -> Result<(), EngineError> {
    let fail = |e: std::io::Error| EngineError(format!("{}: {e}", file.display()));
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let opened = options.open(file).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        opened
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
    }
    drop(opened);
    Ok(())
}

/// The exclusive lock of a data dir: while it is held, no other Herald (in this process or
/// another) opens the same dir. Released when dropped, or when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting: refused, with the holder's pid when known,
    /// if another server holds it.
    pub fn take(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join(LOCK_FILE);
        let fail = |e: std::io::Error| EngineError(format!("{}: {e}", path.display()));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(fail)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(EngineError(format!(
                    "data dir {} is in use by another herald{by}: give each server its own --data-dir",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        // Who holds it, for the next server's message.
        file.set_len(0).map_err(fail)?;
        file.rewind().map_err(fail)?;
        write!(file, "{}", std::process::id()).map_err(fail)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let first = DirLock::take(dir.path()).expect("first");
        let refused = DirLock::take(dir.path()).expect_err("second");
        assert!(refused.0.contains("in use by another herald"), "{refused}");
        assert!(
            refused.0.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        DirLock::take(dir.path()).expect("free again");
    }

    #[cfg(unix)]
    #[test]
    fn created_dirs_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("a/b");
        create_private(&dir).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        std::fs::write(&file, "x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        make_private(&file).expect("private");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "x", "kept");
    }
}
