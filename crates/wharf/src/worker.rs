//! Thread per core: a server's workers, each a tokio current-thread runtime
//! on a thread of its own, fed by one acceptor.
//!
//! Worker 0 is the runtime that runs [`Server::serve`](crate::Server::serve)
//! (the acceptor's); workers 1 to N-1 are threads started here. An accepted
//! connection goes to the next worker in turn and lives there: its opening,
//! its driver, its handler, and its shard of the hub (see `hub`), so that
//! nothing on the path of a message crosses threads but a broadcast to the
//! connections of other workers, which goes once to each of them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};
use crate::hub::Hub;

/// The running workers of one `serve`; dropping it stops workers 1 to N-1
/// (their connections are dropped with their runtime).
pub(crate) struct Workers {
    others: Vec<Worker>,
    next: AtomicUsize,
    /// The inbox of worker 0, on the acceptor's runtime.
    inbox: Option<tokio::task::JoinHandle<()>>,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// Starts the workers of `hub`'s shards (none past the first when it has
    /// one). Must be called on a tokio runtime: it is worker 0.
    pub(crate) fn start(hub: &Hub) -> Result<Self, Error> {
        let n = hub.shards();
        let mut workers = Self {
            others: Vec::with_capacity(n.saturating_sub(1)),
            next: AtomicUsize::new(0),
            inbox: None,
        };
        if n == 1 {
            return Ok(workers);
        }
        // Worker 0 delivers what others hand it on this runtime. This
        // thread is its worker only on a current-thread runtime: on a
        // multi-thread one, its connections' tasks run on any thread, and
        // deliver to every shard themselves.
        if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
            hub.enter_worker(0);
        }
        workers.inbox = Some(tokio::spawn(hub.clone().run_inbox(0)));
        for index in 1..n {
            workers.others.push(Worker::start(hub.clone(), index)?);
        }
        Ok(workers)
    }

    /// Runs `task` on the next worker, in turn.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.others.len() + 1;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % n;
        match index {
            0 => drop(tokio::spawn(task)),
            i => drop(self.others[i - 1].handle.spawn(task)),
        }
    }
}

impl Worker {
    fn start(hub: Hub, index: usize) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::with(ErrorKind::Runtime))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("wharf-worker-{index}"))
            .spawn(move || {
                hub.enter_worker(index);
                runtime.block_on(async move {
                    let inbox = tokio::spawn(hub.run_inbox(index));
                    let _ = stopped.await;
                    inbox.abort();
                });
            })
            .map_err(Error::with(ErrorKind::Runtime))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            inbox.abort();
        }
        for worker in &mut self.others {
            drop(worker.stop.take());
        }
        for worker in &mut self.others {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
