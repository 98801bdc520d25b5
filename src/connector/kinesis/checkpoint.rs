//! Shard checkpoints: the last sequence number acknowledged downstream, or the end of a
//! closed shard. The file store keeps one small JSON file per shard under
//! `dir/application/stream/SHARD_ID.json`, replaced atomically (write a temp file, fsync,
//! rename), so a crash leaves the old or the new checkpoint, never half of one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KinesisError;

/// Where a shard's reading resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is acknowledged: resume
    /// AFTER_SEQUENCE_NUMBER.
    SequenceNumber(String),
    /// The shard is closed and all of it is acknowledged: its children may start.
    ShardEnd,
}

/// A directory of per-shard checkpoint files for one application and stream.
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    dir: PathBuf,
}

impl FileCheckpointStore {
    pub fn new(root: impl AsRef<Path>, application: &str, stream: &str) -> Self {
        Self {
            dir: root.as_ref().join(application).join(stream),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, shard_id: &str) -> PathBuf {
        // Shard ids are `shardId-NNN`; anything else is made file-name safe.
        let safe: String = shard_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    fn err(path: &Path, message: impl std::fmt::Display) -> KinesisError {
        KinesisError::Checkpoint {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// The shard's checkpoint; `None` when it has none yet.
    pub fn load(&self, shard_id: &str) -> Result<Option<Checkpoint>, KinesisError> {
        let path = self.path(shard_id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Self::err(&path, format!("unreadable checkpoint: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(&path, e)),
        }
    }

    /// Replaces the shard's checkpoint atomically.
    pub fn save(&self, shard_id: &str, checkpoint: &Checkpoint) -> Result<(), KinesisError> {
        use std::io::Write;
        let path = self.path(shard_id);
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::err(&self.dir, e))?;
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let body = serde_json::to_vec(checkpoint).map_err(|e| Self::err(&path, e))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Self::err(&path, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_checkpoints_round_trip_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path(), "app", "s");
        assert_eq!(store.load("shardId-000000000001").unwrap(), None);
        let c = Checkpoint::SequenceNumber("4959".into());
        store.save("shardId-000000000001", &c).unwrap();
        assert_eq!(store.load("shardId-000000000001").unwrap(), Some(c));
        store
            .save("shardId-000000000001", &Checkpoint::ShardEnd)
            .unwrap();
        assert_eq!(
            store.load("shardId-000000000001").unwrap(),
            Some(Checkpoint::ShardEnd)
        );
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["shardId-000000000001.json".to_string()]);
    }

    #[test]
    fn kinesis_a_corrupt_checkpoint_is_an_error_not_a_restart_from_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path(), "app", "s");
        std::fs::create_dir_all(store.dir()).unwrap();
        std::fs::write(store.dir().join("shardId-1.json"), b"{half").unwrap();
        assert!(store.load("shardId-1").is_err());
    }
}
