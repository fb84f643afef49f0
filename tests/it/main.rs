//! Integration tests: they drive the real `lungseg` binary on generated trees.

mod common;
mod eval;
mod export;
mod first_hour;
mod hostile_inputs;
mod predict_inputs;
mod prepare;
mod records;
mod reliability;
mod report;
mod split;
mod tcia;
mod tcia_reference;
mod train;
