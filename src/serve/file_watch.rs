//! File watching for certificate and config reload.
//!
//! Kubelet updates a mounted Secret or ConfigMap by swapping a `..data` symlink, not by writing
//! the files: an inode watch on the file misses it. So this reads the files through their
//! paths (following symlinks) on an interval and reports when their contents change, which
//! catches symlink swaps, in-place writes and renames alike.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// A digest of the files' names and contents; a missing file counts as its own state.
pub fn fingerprint(paths: &[PathBuf]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        match std::fs::read(p) {
            Ok(data) => {
                h.update([1]);
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            }
            Err(_) => h.update([0]),
        }
    }
    h.finalize().to_vec()
}

/// Calls `on_change` whenever the set of files `paths` lists, or their contents, change (the
/// files are listed and read on a blocking thread). Runs until the runtime stops.
pub fn spawn<P, F>(name: &'static str, paths: P, every: Duration, mut on_change: F)
where
    P: Fn() -> Vec<PathBuf> + Clone + Send + Sync + 'static,
    F: FnMut() + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = fingerprint(&paths());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let list = paths.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&list())).await else {
                continue;
            };
            if now != last {
                tracing::debug!(watch = name, "files changed");
                last = now;
                on_change();
            }
        }
    });
}
