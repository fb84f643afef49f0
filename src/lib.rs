//! lungseg: a lung-nodule segmentation pipeline (LIDC-IDRI slices → Parquet shards → candle U-Net).
//!
//! Each stage is a module with `run(&Config) -> Result<Report>`; stages talk only through the
//! fixed-name files that [`layout`] knows.

pub mod rng;
pub mod synth;
