//! Which shards an instance reads, and when: ownership among N instances, and the
//! parent-before-child rule after a reshard.

use std::collections::BTreeMap;

use super::checkpoint::Checkpoint;

/// What the source needs of a shard from ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parents: Vec<String>,
}

/// The number at the end of a shard id (`shardId-000000000007` → 7), used as the batch
/// lane and for ownership; `None` for ids of another shape.
pub fn shard_number(shard_id: &str) -> Option<u64> {
    shard_id.rsplit('-').next().and_then(|n| n.parse().ok())
}

/// Whether instance `index` of `count` reads `shard_id`: shard number modulo `count`, so
/// consecutive shards (a new stream's, or a reshard's children) spread evenly; ids without
/// a number fall back to FNV-1a of the id. Stable across restarts and reshards.
pub fn owns_shard(shard_id: &str, index: u32, count: u32) -> bool {
    let count = u64::from(count.max(1));
    let n = shard_number(shard_id).unwrap_or_else(|| {
        shard_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    });
    n % count == u64::from(index)
}

/// Whether a shard may start: each parent has been read to its end, or is no longer
/// listed (trimmed from the stream, so nothing of it is left to read first).
pub fn parents_done(
    shard: &ShardInfo,
    listed: &BTreeMap<String, ShardInfo>,
    checkpoint_of: &mut impl FnMut(&str) -> Option<Checkpoint>,
) -> bool {
    shard
        .parents
        .iter()
        .all(|p| !listed.contains_key(p) || checkpoint_of(p) == Some(Checkpoint::ShardEnd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_two_instances_split_four_shards_two_each() {
        let ids: Vec<String> = (0..4).map(|i| format!("shardId-{i:012}")).collect();
        let a: Vec<_> = ids.iter().filter(|s| owns_shard(s, 0, 2)).collect();
        let b: Vec<_> = ids.iter().filter(|s| owns_shard(s, 1, 2)).collect();
        assert_eq!((a.len(), b.len()), (2, 2));
        assert!(ids.iter().all(|s| owns_shard(s, 0, 1)));
        assert!(owns_shard("odd", 0, 1));
    }

    #[test]
    fn kinesis_a_child_waits_for_both_parents_of_a_merge() {
        let child = ShardInfo {
            shard_id: "shardId-000000000004".into(),
            parents: vec!["shardId-000000000000".into(), "shardId-000000000001".into()],
        };
        let mut listed = BTreeMap::new();
        for s in ["shardId-000000000000", "shardId-000000000001"] {
            listed.insert(
                s.to_string(),
                ShardInfo {
                    shard_id: s.into(),
                    parents: vec![],
                },
            );
        }
        let mut one_done = |s: &str| (s == "shardId-000000000000").then_some(Checkpoint::ShardEnd);
        assert!(!parents_done(&child, &listed, &mut one_done));
        let mut both = |_: &str| Some(Checkpoint::ShardEnd);
        assert!(parents_done(&child, &listed, &mut both));
        listed.remove("shardId-000000000001");
        assert!(
            parents_done(&child, &listed, &mut one_done),
            "a trimmed parent does not block"
        );
    }
}
