//! The data layer every stage shares: slice samples, the shard format (writer and reader), the
//! slice index, the shard stream, rater fusion and batching. It knows what a prepared data
//! directory holds; `layout` knows where.

pub mod batcher;
pub mod fusion;
pub mod index;
pub mod manifest;
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
