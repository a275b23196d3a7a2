//! I/O workers: one thread per core, each running its own single-threaded
//! runtime. A connection is handed to one worker when it is accepted and
//! lives there to the end: its TLS, its handshake, its upstream connection
//! and its session task all run on that one thread.
//!
//! Why not tokio's work-stealing scheduler: on the small-message relay it
//! left a core idle a tenth of the time (one shared I/O driver, a futex
//! wake-up of the other worker for most batches of events, tasks moving
//! between cores); a thread that owns its connections' sockets and tasks has
//! none of that, and moved the 64 B relay from parity with HAProxy to ahead
//! of it (BENCHMARKS.md). HAProxy, Envoy and nginx are built the same way.
//!
//! The price is that a connection never moves: new connections go to the
//! worker with the fewest live tasks, so long-lived sessions spread evenly,
//! but one very busy session cannot be helped by an idle core.
//!
//! Everything else (accept loops, admin API, signals, key fetches,
//! revocation sync, the demo upstream) runs on the control runtime that
//! `wsgate run` starts on the main thread.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The worker this thread is, on worker threads.
    static CURRENT: std::cell::RefCell<Option<Worker>> = const { std::cell::RefCell::new(None) };
}

/// One worker: its place in the set and its runtime.
#[derive(Clone, Debug)]
pub struct Worker {
    pub index: usize,
    pub handle: Handle,
}

impl Worker {
    /// The worker the calling thread is (`None` off the worker threads:
    /// the control runtime, tests).
    pub fn current() -> Option<Worker> {
        CURRENT.with(|c| c.borrow().clone())
    }
}

/// A running set of worker threads. Stopping them ([`Workers::stop`])
/// drops whatever tasks they still hold.
pub struct Workers {
    handles: Vec<Handle>,
    /// Taken by the first [`Workers::stop`].
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: CancellationToken,
    /// Where the search for the least busy worker starts, so ties rotate.
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count.max(1));
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let home = Worker {
                index: i,
                handle: handle.clone(),
            };
            let stopped = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wsgate-io-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| *c.borrow_mut() = Some(home));
                    rt.block_on(stopped.cancelled());
                    // Dropped here, on its own thread and outside any
                    // runtime: tasks still held are cancelled.
                    drop(rt);
                });
            match spawned {
                Ok(thread) => {
                    handles.push(handle);
                    threads.push(thread);
                }
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            handles,
            threads: Mutex::new(threads),
            stop,
            next: AtomicUsize::new(0),
        })
    }

    /// The number of worker threads a host should run: one per core this
    /// process may use (CPU affinity and cgroup quota included).
    pub fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on the least busy worker. Tasks it spawns (the session
    /// after an upgrade) run on the same worker.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.least_busy().spawn(task);
    }

    /// The worker with the fewest live tasks (connections being handshaken
    /// and sessions both count), searching from a rotating start so that
    /// equally loaded workers take turns.
    fn least_busy(&self) -> &Handle {
        let n = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = &self.handles[start];
        let mut best_load = best.metrics().num_alive_tasks();
        for k in 1..n {
            let h = &self.handles[(start + k) % n];
            let load = h.metrics().num_alive_tasks();
            if load < best_load {
                best = h;
                best_load = load;
            }
        }
        best
    }

    /// Live tasks per worker, in worker order.
    pub fn loads(&self) -> Vec<usize> {
        self.handles
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .collect()
    }

    /// Stops every worker and waits (bounded by `wait`) for their threads to
    /// end. Tasks still running are dropped; nothing spawned afterwards runs.
    pub async fn stop(&self, wait: Duration) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock());
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout(wait, joined).await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Threads not stopped explicitly still end with their owner.
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn tasks_run_on_worker_threads_and_spread_evenly() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        // Four long-lived tasks: two per worker.
        let hold = CancellationToken::new();
        let mut names = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel();
            let hold = hold.clone();
            workers.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
                hold.cancelled().await;
            });
            names.push(rx.await.unwrap().unwrap());
        }
        assert_eq!(workers.loads(), vec![2, 2]);
        let on_first = names.iter().filter(|n| *n == "wsgate-io-0").count();
        let on_second = names.iter().filter(|n| *n == "wsgate-io-1").count();
        assert_eq!((on_first, on_second), (2, 2), "{names:?}");
        hold.cancel();
        workers.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_spawned_task_stays_on_its_worker() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = oneshot::channel();
        workers.spawn(async move {
            let outer = std::thread::current().id();
            let inner = tokio::spawn(async { std::thread::current().id() })
                .await
                .unwrap();
            let _ = tx.send(outer == inner);
        });
        assert!(rx.await.unwrap());
        workers.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_panicking_task_leaves_its_worker_serving() {
        let workers = Workers::start(1).unwrap();
        workers.spawn(async { panic!("a task failed") });
        let (tx, rx) = oneshot::channel();
        workers.spawn(async move {
            let _ = tx.send(());
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        workers.stop(Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn stop_drops_tasks_still_held() {
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let workers = Workers::start(2).unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel::<()>();
        let d = Dropped(Arc::clone(&dropped));
        workers.spawn(async move {
            let _d = d;
            let _ = tx.send(());
            std::future::pending::<()>().await;
        });
        rx.await.unwrap_or(());
        workers.stop(Duration::from_secs(5)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
