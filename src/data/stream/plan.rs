//! The reading plan of one pass: index entries grouped into (shard, row group) units, in index
//! order for validation or in a seeded shuffled order for training, plus the shuffle buffer.

use crate::data::index::IndexEntry;
use crate::data::shards::ShardReader;
use crate::error::Result;
use crate::rng::SplitMix64;
use std::collections::BTreeMap;

/// The entries read from one row group in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub shard: String,
    pub group: usize,
    /// (row within the group, position in the index), in emission order.
    pub rows: Vec<(usize, usize)>,
}

/// Units in index order: each run of consecutive entries in the same row group is one unit, so
/// the samples come out exactly in index order.
pub(crate) fn in_index_order(
    entries: &[IndexEntry],
    reader: &mut ShardReader,
) -> Result<Vec<Unit>> {
    let mut units: Vec<Unit> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = reader.locate(&e.shard, e.row)?;
        match units.last_mut() {
            Some(u) if u.shard == e.shard && u.group == at.group => {
                u.rows.push((at.row_in_group, i));
            }
            _ => units.push(Unit {
                shard: e.shard.clone(),
                group: at.group,
                rows: vec![(at.row_in_group, i)],
            }),
        }
    }
    Ok(units)
}

/// Every row group touched by the index is one unit (rows in shard order); the units are
/// shuffled with `rng`, so a pass visits row groups of all shards in random order.
pub(crate) fn shuffled(
    entries: &[IndexEntry],
    reader: &mut ShardReader,
    rng: &mut SplitMix64,
) -> Result<Vec<Unit>> {
    let mut groups: BTreeMap<(String, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let at = reader.locate(&e.shard, e.row)?;
        groups
            .entry((e.shard.clone(), at.group))
            .or_default()
            .push((at.row_in_group, i));
    }
    let mut units: Vec<Unit> = groups
        .into_iter()
        .map(|((shard, group), mut rows)| {
            rows.sort_unstable();
            Unit { shard, group, rows }
        })
        .collect();
    rng.shuffle(&mut units);
    Ok(units)
}

/// A fixed-size reservoir: once full, each new item replaces a random resident, which is
/// emitted. Spreads each row group's slices across the pass.
pub(crate) struct ShuffleBuffer<T> {
    items: Vec<T>,
    capacity: usize,
}

impl<T> ShuffleBuffer<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds `item`; returns one to emit once the buffer is full.
    pub(crate) fn push(&mut self, item: T, rng: &mut SplitMix64) -> Option<T> {
        if self.items.len() < self.capacity {
            self.items.push(item);
            return None;
        }
        let i = rng.below(self.items.len());
        Some(std::mem::replace(&mut self.items[i], item))
    }

    /// Takes a random remaining item, for draining at the end of the pass.
    pub(crate) fn pop(&mut self, rng: &mut SplitMix64) -> Option<T> {
        if self.items.is_empty() {
            return None;
        }
        let i = rng.below(self.items.len());
        Some(self.items.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_buffer_emits_a_permutation() {
        let mut rng = SplitMix64::new(3);
        let mut buf = ShuffleBuffer::new(4);
        let mut out: Vec<u32> = (0..20).filter_map(|i| buf.push(i, &mut rng)).collect();
        assert_eq!(out.len(), 16);
        while let Some(x) = buf.pop(&mut rng) {
            out.push(x);
        }
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(out, sorted);
    }
}
