//! The data layer every stage shares: what a prepared data directory holds and the one way to
//! read and write it: slice samples, the shard format (writer and reader), the manifest, the
//! `prepare.json` and `split.json` records, the split table and slice indexes, the shard stream,
//! rater fusion, batching and training patches. `layout` knows the file names.

pub mod batcher;
pub mod fusion;
pub mod index;
pub mod manifest;
pub mod nodule_table;
pub mod patch;
pub mod prepare_record;
pub mod sample;
pub mod shards;
pub mod split_record;
pub mod split_table;
pub mod stream;
#[cfg(test)]
pub(crate) mod test_shards;

pub use index::{write_index, IndexEntry, SliceIndex};
pub use sample::SliceSample;
pub use stream::{Order, ShardStream, StreamOptions};
