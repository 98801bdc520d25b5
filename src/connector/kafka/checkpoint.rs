//! What a windowed stage downstream had finalized, per partition, kept in files for brokers
//! that drop the metadata of committed offsets (see `KafkaSourceConfig::checkpoint_dir`).
//!
//! One file per partition, `DIR/GROUP/TOPIC/PARTITION`, holding one decimal number: the
//! `finalized_before_ms` of the last offset stored for that partition. A partition has one
//! owner in the group at a time, so members never write the same file. Writes are atomic
//! (a temporary file renamed over the old one). The value only grows and is valid for any
//! offset at or before the one it was stored with, so a file a little ahead of the broker's
//! commit is harmless.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FinalizedFiles {
    dir: PathBuf,
}

impl FinalizedFiles {
    pub fn new(dir: &Path, group_id: &str) -> Self {
        Self {
            dir: dir.join(sanitize(group_id)),
        }
    }

    fn path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(sanitize(topic)).join(partition.to_string())
    }

    /// The value kept for a partition; `None` when there is none or it cannot be read.
    pub fn read(&self, topic: &str, partition: i32) -> Option<i64> {
        std::fs::read_to_string(self.path(topic, partition))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        finalized_before_ms: i64,
    ) -> std::io::Result<()> {
        let path = self.path(topic, partition);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{finalized_before_ms}")?;
        file.sync_data()?;
        std::fs::rename(&tmp, &path)
    }
}

/// A name safe as one path component.
fn sanitize(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "_".repeat(safe.len().max(1))
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalized_files_round_trip_per_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = FinalizedFiles::new(dir.path(), "group/a");
        assert_eq!(files.read("t", 0), None);
        files.write("t", 0, 1_700_000_000_000).expect("write");
        files.write("t", 1, -5).expect("write");
        files.write("t", 0, 1_700_000_060_000).expect("overwrite");
        assert_eq!(files.read("t", 0), Some(1_700_000_060_000));
        assert_eq!(files.read("t", 1), Some(-5));
        assert!(dir.path().join("group_a/t/0").exists());
    }
}
