//! What a run directory holds, and the one way every stage reads it: the run record and the
//! training settings in it (`config.json`), the run status (`train_state.json`), checkpoints, the
//! epoch table and the evaluation's summary and tables. `layout` knows the file names.

pub mod checkpoint;
pub mod epochs;
pub mod eval_summary;
pub mod eval_tables;
pub mod record;
pub mod settings;
pub mod status;
