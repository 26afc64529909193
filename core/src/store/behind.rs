//! The write-behind thread: puts page versions into sled in the order they were handed over,
//! so that whoever staged them goes on verifying the next block meanwhile (a sled insert of
//! a page cost as much as verifying a block).
//!
//! Ordering is what keeps the store crash-safe: jobs are written first in, first out, and a
//! head record is written only after a [`Behind::barrier`] has seen every job sent before it
//! reach sled (sled recovers a prefix of its log).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::staged::{PageWrite, Staged};
use super::{key_of, lock};
use crate::error::{Error, Result};

/// Bytes queued beyond which a writer waits for the thread to catch up.
const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

enum Job {
    Write {
        core: Arc<Mutex<Staged>>,
        id: u64,
        writes: Vec<PageWrite>,
        bytes: usize,
    },
    Barrier(mpsc::SyncSender<()>),
}

/// The handle on the write-behind thread.
#[derive(Debug)]
pub(crate) struct Behind {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
    /// The first sled error of the thread: every later write reports it.
    failed: Arc<Mutex<Option<String>>>,
}

impl Behind {
    pub(crate) fn spawn(tree: sled::Tree) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(None));
        let (q, f) = (queued.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name("apiary-store-write".into())
            .spawn(move || run(&tree, &rx, &q, &f))?;
        Ok(Behind {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            queued,
            failed,
        })
    }

    /// The first sled error of the thread.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    fn check(&self) -> Result<()> {
        match lock(&self.failed).as_ref() {
            Some(e) => Err(Error::Io(std::io::Error::other(format!(
                "the store could not write: {e}"
            )))),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.check()?;
        lock(&self.tx)
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| Error::closed("the store is closed"))
    }

    /// Hands page versions of core `id` to the thread. Call it with the core's lock held,
    /// so that jobs of one core are queued in the order their pages were taken.
    pub(crate) fn write(
        &self,
        core: &Arc<Mutex<Staged>>,
        id: u64,
        writes: Vec<PageWrite>,
    ) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let bytes = writes.iter().map(|w| w.value.len()).sum();
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        self.send(Job::Write {
            core: core.clone(),
            id,
            writes,
            bytes,
        })
    }

    /// Waits until every job sent before is in sled. Never call it with a core's lock held
    /// (the thread takes it to mark pages clean).
    pub(crate) fn barrier(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Barrier(tx))?;
        rx.recv()
            .map_err(|_| Error::closed("the store writer stopped"))?;
        self.check()
    }

    /// Waits for the thread if it is far behind (without a core's lock held).
    pub(crate) fn keep_up(&self) -> Result<()> {
        if self.queued.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
            self.barrier()?;
        }
        self.check()
    }

    /// Lets the thread finish what is queued, and waits for it to stop (it holds the
    /// database open).
    pub(crate) fn close(&self) {
        lock(&self.tx).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn run(
    tree: &sled::Tree,
    rx: &mpsc::Receiver<Job>,
    queued: &AtomicUsize,
    failed: &Mutex<Option<String>>,
) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write {
                core,
                id,
                writes,
                bytes,
            } => {
                let mut ok = true;
                for w in &writes {
                    if let Err(e) = tree.insert(key_of(w.kind, id, Some(w.page)), w.value.clone()) {
                        tracing::error!("store: writing a page failed: {e}");
                        lock(failed).get_or_insert_with(|| e.to_string());
                        ok = false;
                        break;
                    }
                }
                if ok {
                    let mut st = lock(&core);
                    for w in &writes {
                        st.written(w);
                    }
                }
                queued.fetch_sub(bytes, Ordering::Relaxed);
            }
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}
