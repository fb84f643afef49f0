//! What a run directory holds and how it is read: the resolved training settings, the epoch
//! table and the evaluation's summary and tables. `layout` knows the file names.

pub mod checkpoint;
pub mod epochs;
pub mod eval_summary;
pub mod eval_tables;
pub mod record;
pub mod settings;
pub mod status;
