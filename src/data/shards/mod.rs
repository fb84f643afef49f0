//! The shard files (`shards/slices-NNNNN.parquet`): one row per kept slice with its pixels, written
//! by `prepare` and streamed by training and evaluation.

pub mod reader;
pub mod record;
pub mod writer;

pub(crate) use reader::ShardReader;
pub use record::{ScanPlace, SliceRecord};
pub use writer::{ImageCompression, ShardPosition, ShardWriter};
