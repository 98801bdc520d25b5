//! Shard checkpoints: the last sequence number acknowledged downstream, or the end of a
//! closed shard. The file store keeps one small JSON file per shard under
//! `dir/application/stream/SHARD_ID.json`, replaced atomically (write a temp file, fsync,
//! rename), so a crash leaves the old or the new checkpoint, never half of one.
//!
//! A file holds `{"sequence_number":"…","finalized_before_ms":…}` or `"shard_end"`.
//! `finalized_before_ms` is what a windowed stage downstream had emitted for good (see
//! [`crate::runtime::AckedPrefix`]); it is absent when nothing was finalized, and in files
//! written before it existed, which still load.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::KinesisError;

/// Where a shard's reading resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OnDisk", into = "OnDisk")]
pub enum Checkpoint {
    /// Every record up to and including `sequence_number` is acknowledged: resume
    /// AFTER_SEQUENCE_NUMBER. A windowed stage downstream had emitted every window starting
    /// before `finalized_before_ms` for good: it skips re-read records of those windows.
    SequenceNumber {
        sequence_number: String,
        finalized_before_ms: Option<i64>,
    },
    /// The shard is closed and all of it is acknowledged: its children may start.
    ShardEnd,
}

/// The JSON of a checkpoint file.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OnDisk {
    End(EndTag),
    At(Position),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EndTag {
    ShardEnd,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    sequence_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finalized_before_ms: Option<i64>,
}

impl From<OnDisk> for Checkpoint {
    fn from(c: OnDisk) -> Self {
        match c {
            OnDisk::End(EndTag::ShardEnd) => Checkpoint::ShardEnd,
            OnDisk::At(p) => Checkpoint::SequenceNumber {
                sequence_number: p.sequence_number,
                finalized_before_ms: p.finalized_before_ms,
            },
        }
    }
}

impl From<Checkpoint> for OnDisk {
    fn from(c: Checkpoint) -> Self {
        match c {
            Checkpoint::ShardEnd => OnDisk::End(EndTag::ShardEnd),
            Checkpoint::SequenceNumber {
                sequence_number,
                finalized_before_ms,
            } => OnDisk::At(Position {
                sequence_number,
                finalized_before_ms,
            }),
        }
    }
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
        let c = Checkpoint::SequenceNumber {
            sequence_number: "4959".into(),
            finalized_before_ms: Some(1_700_000_060_000),
        };
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
    fn kinesis_checkpoints_written_before_the_finalized_floor_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path(), "app", "s");
        std::fs::create_dir_all(store.dir()).unwrap();
        std::fs::write(
            store.dir().join("shardId-1.json"),
            br#"{"sequence_number":"4959"}"#,
        )
        .unwrap();
        std::fs::write(store.dir().join("shardId-2.json"), br#""shard_end""#).unwrap();
        assert_eq!(
            store.load("shardId-1").unwrap(),
            Some(Checkpoint::SequenceNumber {
                sequence_number: "4959".into(),
                finalized_before_ms: None
            })
        );
        assert_eq!(store.load("shardId-2").unwrap(), Some(Checkpoint::ShardEnd));
        // Without a floor, a new file is what an old one was.
        let c = Checkpoint::SequenceNumber {
            sequence_number: "7".into(),
            finalized_before_ms: None,
        };
        store.save("shardId-3", &c).unwrap();
        assert_eq!(
            std::fs::read_to_string(store.dir().join("shardId-3.json")).unwrap(),
            r#"{"sequence_number":"7"}"#
        );
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
