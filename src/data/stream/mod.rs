//! Streams the slices of a split index out of the Parquet shards on a background thread, one
//! row group at a time through a bounded channel, so memory stays bounded, I/O overlaps compute
//! and the whole dataset is never held.
//!
//! Memory held by a stream: the decoded rows of one row group, the shuffle buffer (training
//! only) and at most `capacity + 1` samples between the reader thread and the consumer.

mod plan;

use crate::data::fusion::RaterFusion;
use crate::data::index::{IndexEntry, SliceIndex};
use crate::data::sample::SliceSample;
use crate::data::shards::ShardReader;
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::rng::SplitMix64;
use plan::{ShuffleBuffer, Unit};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Default number of samples the channel between the reader thread and the consumer holds.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default size of the training shuffle buffer, in samples.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 512;

/// The order in which a stream emits samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Exactly the index order (validation).
    Index,
    /// Row groups in an order drawn from `SplitMix64::derive(seed, "epoch-{epoch}")`, then a
    /// shuffle buffer of `buffer` samples (training). Same seed and epoch, same order.
    Shuffled {
        /// The run seed.
        seed: u64,
        /// The epoch number (each epoch draws a different order).
        epoch: u64,
        /// Shuffle buffer size in samples.
        buffer: usize,
    },
}

/// How to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// How rater marks become the mask.
    pub fusion: RaterFusion,
    /// Samples the channel holds (at least 1).
    pub capacity: usize,
    /// Emission order.
    pub order: Order,
}

impl StreamOptions {
    /// Index order, for validation.
    pub fn validation(fusion: RaterFusion) -> Self {
        Self {
            fusion,
            capacity: DEFAULT_CAPACITY,
            order: Order::Index,
        }
    }

    /// Seeded shuffled order for one training epoch.
    pub fn training(fusion: RaterFusion, seed: u64, epoch: u64) -> Self {
        Self {
            fusion,
            capacity: DEFAULT_CAPACITY,
            order: Order::Shuffled {
                seed,
                epoch,
                buffer: DEFAULT_SHUFFLE_BUFFER,
            },
        }
    }
}

/// Counts samples between the reader thread and the consumer.
#[derive(Debug, Default)]
struct Flow {
    in_flight: AtomicIsize,
    max_in_flight: AtomicIsize,
}

/// An iterator over the samples of an index, read by a background thread. Dropping it stops
/// and joins the thread. After an error item the stream ends.
pub struct ShardStream {
    rx: Option<Receiver<Result<SliceSample>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    flow: Arc<Flow>,
    shards_dir: PathBuf,
}

impl ShardStream {
    /// Starts streaming the slices of `index` from `data`'s shards. Shard problems (missing,
    /// wrong contract, stale rows) arrive as error items.
    pub fn open(data: &DataDir, index: &SliceIndex, options: &StreamOptions) -> Result<Self> {
        let (tx, rx) = sync_channel(options.capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let flow = Arc::new(Flow::default());
        let producer = Producer {
            reader: ShardReader::new(data.clone(), options.fusion),
            entries: index.entries().to_vec(),
            order: options.order,
            tx,
            stop: Arc::clone(&stop),
            flow: Arc::clone(&flow),
        };
        let shards_dir = data.shards_dir();
        let handle = std::thread::Builder::new()
            .name("lungseg-shards".into())
            .spawn(move || producer.run())
            .map_err(|e| Error::io(&shards_dir, e))?;
        Ok(Self {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            flow,
            shards_dir,
        })
    }

    /// The most samples that were ever sent by the reader thread and not yet taken by the
    /// consumer; at most `capacity + 1`.
    pub fn max_in_flight(&self) -> usize {
        self.flow.max_in_flight.load(Ordering::SeqCst).max(0) as usize
    }

    fn join(&mut self) -> Result<()> {
        match self.handle.take().map(|h| h.join()) {
            Some(Err(_)) => Err(Error::io(
                &self.shards_dir,
                std::io::Error::other("the shard reader thread panicked"),
            )),
            _ => Ok(()),
        }
    }
}

impl Iterator for ShardStream {
    type Item = Result<SliceSample>;

    fn next(&mut self) -> Option<Self::Item> {
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(item) => {
                self.flow.in_flight.fetch_sub(1, Ordering::SeqCst);
                Some(item)
            }
            Err(_) => {
                self.rx = None;
                self.join().err().map(Err)
            }
        }
    }
}

impl Drop for ShardStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Dropping the receiver makes a blocked or later `send` fail, so the thread exits.
        self.rx = None;
        let _ = self.join();
    }
}

/// Why the reader thread stopped early.
enum Halt {
    /// The consumer went away.
    Disconnected,
    /// Reading failed; the error goes to the consumer.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

/// The state moved onto the reader thread.
struct Producer {
    reader: ShardReader,
    entries: Vec<IndexEntry>,
    order: Order,
    tx: SyncSender<Result<SliceSample>>,
    stop: Arc<AtomicBool>,
    flow: Arc<Flow>,
}

impl Producer {
    fn run(mut self) {
        if let Err(Halt::Failed(e)) = self.produce() {
            // If the consumer is gone there is no one to tell.
            let _ = self.tx.send(Err(e));
        }
    }

    fn send(&self, sample: SliceSample) -> Result<(), Halt> {
        self.tx.send(Ok(sample)).map_err(|_| Halt::Disconnected)?;
        // Counted after the send so the figure never includes a sample the consumer already
        // took: at most `capacity` queued plus one taken but not yet counted down.
        let n = self.flow.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.flow.max_in_flight.fetch_max(n, Ordering::SeqCst);
        Ok(())
    }

    fn produce(&mut self) -> Result<(), Halt> {
        let (units, mut shuffle) = match self.order {
            Order::Index => (plan::in_index_order(&self.entries, &mut self.reader)?, None),
            Order::Shuffled {
                seed,
                epoch,
                buffer,
            } => {
                let mut rng = SplitMix64::derive(seed, &format!("epoch-{epoch}"));
                let units = plan::shuffled(&self.entries, &mut self.reader, &mut rng)?;
                (units, Some((ShuffleBuffer::new(buffer), rng)))
            }
        };
        tracing::debug!(
            slices = self.entries.len(),
            row_groups = units.len(),
            "streaming shards"
        );
        for unit in &units {
            if self.stop.load(Ordering::SeqCst) {
                return Err(Halt::Disconnected);
            }
            for sample in self.read_unit(unit)? {
                match &mut shuffle {
                    None => self.send(sample)?,
                    Some((buffer, rng)) => {
                        if let Some(out) = buffer.push(sample, rng) {
                            self.send(out)?;
                        }
                    }
                }
            }
        }
        if let Some((mut buffer, mut rng)) = shuffle {
            while let Some(out) = buffer.pop(&mut rng) {
                self.send(out)?;
            }
        }
        Ok(())
    }

    fn read_unit(&mut self, unit: &Unit) -> Result<Vec<SliceSample>> {
        let rows: Vec<(usize, &IndexEntry)> = unit
            .rows
            .iter()
            .map(|&(r, i)| (r, &self.entries[i]))
            .collect();
        self.reader.read(&unit.shard, unit.group, &rows)
    }
}

#[cfg(test)]
mod tests;
