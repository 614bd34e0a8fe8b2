//! bunwasi's wasi:http host (docs/ARCHITECTURE.md, "wasi:http services").
//!
//! libwasmtime's C API links the wasi:http imports but has no call that creates the
//! incoming-request and response-outparam a `wasi:http/incoming-handler` export takes, so
//! this small library does that part with the `wasmtime`, `wasmtime-wasi` and
//! `wasmtime-wasi-http` crates. It also owns the HTTP/1.1 server (hyper on tokio): the
//! guest's response body is a wasi:io stream it may keep writing after `response-outparam.set`,
//! and hyper consumes it as it is written, with backpressure, on the same runtime that runs
//! the guest. The executor (TypeScript, src/engines/wasmtime/http/) decides when to serve,
//! with what configuration, and when to stop; it calls these functions through bun:ffi.
//!
//! Every request gets a fresh Store and instance (from one pre-instantiated component),
//! as `wasmtime serve` does for WASIp2 components; an idle worker thread makes the next one
//! ahead of time (see `Idle`). The service as a whole is bounded (issue 16): at most
//! `max_requests` guests run at once (the others wait for a turn), and all of its stores
//! together grow their memories and tables within `memory_limit` (see `Budget`).
//!
//!
//! A caller that lives in another network namespace than the service's (the shared-mode
//! daemon) names the service's (`netns`): every socket of the service, its listener and its
//! outgoing requests, is made on a thread of ours that entered it (see `Netns`).

use std::ffi::{c_char, c_int};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;

use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use tokio::sync::{Notify, watch};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Result, Store};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Identity of this build, part of the compile-cache key (an artifact serialized by one
/// wasmtime build must not be fed to another).
static VERSION: &str = concat!("wasmtime-48.0.0+bunwasi-http-host-", env!("CARGO_PKG_VERSION"), "\0");

/// The engine both the compiler (shim) and the server (executor) use: artifacts written by
/// one are read by the other, so every setting that changes compiled code lives here.
fn config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Epoch checks in the compiled code: a guest busy in wasm yields to the runtime now and
    // then (see `tick`), and `bunwasi_http_abort` ends it (a host that outlives the service,
    // the shared-mode daemon, must get its threads back).
    config.epoch_interruption(true);
    config
}

fn engine() -> Result<Engine> {
    Engine::new(&config())
}

/// The server's engine: as `engine()`, plus the pooling allocator when the machine allows its
/// address-space reservation (as `wasmtime serve` does by default): a store per request then
/// takes its memories and tables from a pool instead of mapping them. It changes no compiled
/// code, so the compiler's artifacts load here.
fn serving_engine(pooling: bool) -> Result<Engine> {
    if !pooling {
        return engine();
    }
    let mut config = config();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling_config()));
    match Engine::new(&config) {
        Ok(e) => Ok(e),
        Err(_) => engine(),
    }
}

/// How a pooled memory or table is reset when its store (request) ends. wasmtime's default
/// gives every page back with madvise(MADV_DONTNEED): a TLB shootdown (an IPI to the other
/// cores running our threads) per call, three calls per request for a hello handler, and the
/// next request page-faults the pages in again. That was a third of the server's CPU (perf,
/// 50 connections). Instead the dirty pages are reset in place (copied from the memory's
/// image or zeroed), found with the PAGEMAP_SCAN ioctl (Linux 6.7+; wasmtime checks that it
/// works) up to `KEEP_RESIDENT` per memory; beyond that, pages are given back as before.
/// Without the ioctl the first `KEEP_RESIDENT_NO_SCAN` bytes are zeroed whether dirty or not,
/// so that bound stays small (a small guest's whole memory: 2 pages for our hello handler).
/// Cost: a free slot keeps up to that much resident (a slot per concurrently live store).
const KEEP_RESIDENT: usize = 1 << 20;
const KEEP_RESIDENT_NO_SCAN: usize = 128 << 10;

fn pooling_config() -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    let scan = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
    pool.pagemap_scan(if scan { wasmtime::Enabled::Yes } else { wasmtime::Enabled::No });
    let keep = if scan { KEEP_RESIDENT } else { KEEP_RESIDENT_NO_SCAN };
    pool.linear_memory_keep_resident(keep);
    pool.table_keep_resident(keep);
    pool
}

// ---- per-request store data ----

struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Hooks,
    limits: Share,
}

/// Bytes a table element takes at most (a funcref is a pointer).
const TABLE_ELEMENT_BYTES: usize = 8;

/// The service's `memory_limit` and what its stores hold of it: all of their memories and
/// tables together (the spare ones `Idle` makes included), not each store's. The limit may
/// change while the service runs (`bunwasi_http_set_memory_limit`, an Update); `used` is also
/// what Stats reports as the service's memory.
struct Budget {
    /// Bytes all stores may hold together; u64::MAX: unbounded.
    limit: AtomicU64,
    used: AtomicU64,
}

impl Budget {
    fn new(limit: Option<u64>) -> Self {
        Budget { limit: AtomicU64::new(limit.unwrap_or(u64::MAX)), used: AtomicU64::new(0) }
    }

    /// A new limit, unless the stores already hold more than it (the cgroup v1 answer to a
    /// memory limit below the usage: EBUSY, nothing changed). False then.
    fn set_limit(&self, limit: u64) -> bool {
        if self.used.load(Ordering::SeqCst) > limit {
            return false;
        }
        self.limit.store(limit, Ordering::SeqCst);
        true
    }
}

/// A store's part of the `Budget` (its ResourceLimiter): it takes what its memories and tables
/// grow by, and gives all of it back when the store is dropped.
struct Share {
    shared: Arc<Shared>,
    taken: u64,
}

impl Share {
    fn take(&mut self, bytes: usize) -> bool {
        let b = &self.shared.budget;
        let bytes = bytes as u64;
        let limit = b.limit.load(Ordering::SeqCst);
        let ok = b.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| used.checked_add(bytes).filter(|n| *n <= limit)).is_ok();
        if ok {
            self.taken += bytes;
        }
        ok
    }
}

impl wasmtime::ResourceLimiter for Share {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        Ok(self.take(desired.saturating_sub(current)))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        Ok(self.take(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES)))
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shared.budget.used.fetch_sub(self.taken, Ordering::SeqCst);
    }
}

/// wasi:http's default behaviour, plus a `Host` header on outgoing requests: HTTP/1.1 requires
/// one (RFC 9112, 3.2) and servers refuse requests without it, but wasmtime's WASIp2 client
/// sends none and the guest may not set it (`host` is a forbidden header). `outgoing: false`
/// refuses every outgoing request (HttpRequestDenied): the caller has no network to give them.
struct Hooks {
    outgoing: bool,
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: hyper::http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        use hyper::http::header::{HOST, HeaderValue};
        if !self.outgoing {
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        if !request.headers().contains_key(HOST) {
            if let Some(v) = request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                request.headers_mut().insert(HOST, v);
            }
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>))
        })
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// What the executor asked for (see `parse_config`).
struct ServeConfig {
    addr: SocketAddr,
    backlog: i32,
    env: Vec<(String, String)>,
    args: Vec<String>,
    root: Option<(String, bool)>,
    /// All of the service's stores together, in bytes.
    memory_limit: Option<u64>,
    /// Guests running at once; the other requests wait for a turn.
    max_requests: Option<usize>,
    artifact: Option<String>,
    threads: usize,
    pooling: bool,
    /// The guest's stdout and stderr: these fds (duplicated at start) instead of the process's.
    stdout_fd: Option<i32>,
    stderr_fd: Option<i32>,
    /// The network namespace (a path) every socket of the service is made in; None: the caller's.
    netns: Option<String>,
    /// Outgoing requests allowed (false: each one is refused).
    outgoing: bool,
    /// False: our threads give up the capabilities over files before they serve (see `drop_file_caps`).
    file_caps: bool,
    /// The container's CPU quota and period in µs (quota <= 0: none): see `Cpu`.
    cpu_quota_us: i64,
    cpu_period_us: u64,
    /// The nice value of every thread of the service (the container's CPU shares as a weight).
    nice: i32,
    /// The CPUs every thread of the service is confined to (the container's cpuset, in a caller
    /// with no cgroup per container); None: wherever the caller's threads may run.
    cpus: Option<Vec<u32>>,
}

/// The configuration is a list of NUL-terminated strings, key then value, keys repeated for
/// lists: `addr`, `backlog`, `env` (K=V), `arg`, `root`, `root_ro` (1), `memory_limit` (bytes,
/// all stores together), `max_requests` (guests at once), `artifact` (a serialized component to
/// try before compiling), `threads`, `pooling` (0 = off),
/// `stdout_fd`, `stderr_fd` (the guest's output; default: the process's own), `netns` (the
/// path of the network namespace to listen and connect in), `outgoing` (0 = refuse outgoing
/// requests), `file_caps` (0 = the serving threads give up the capabilities over files),
/// `cpu_quota` and `cpu_period` (µs: the service's threads together use at most quota per
/// period, see `Cpu`), `nice` (the threads' nice value), `cpus` (a CPU number, repeated: the
/// CPUs every thread of the service is confined to).
fn parse_config(bytes: &[u8]) -> Result<ServeConfig> {
    let mut cfg = ServeConfig {
        addr: "0.0.0.0:8080".parse().unwrap(),
        backlog: 100,
        env: vec![],
        args: vec![],
        root: None,
        memory_limit: None,
        max_requests: None,
        artifact: None,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        pooling: true,
        stdout_fd: None,
        stderr_fd: None,
        netns: None,
        outgoing: true,
        file_caps: true,
        cpu_quota_us: 0,
        cpu_period_us: 100_000,
        nice: 0,
        cpus: None,
    };
    let mut root_ro = false;
    let mut parts = bytes.split(|b| *b == 0);
    while let Some(k) = parts.next() {
        if k.is_empty() {
            continue;
        }
        let k = std::str::from_utf8(k)?;
        let v = std::str::from_utf8(parts.next().ok_or_else(|| wasmtime::format_err!("config key {k} has no value"))?)?;
        match k {
            "addr" => {
                cfg.addr = v.parse().map_err(|e| wasmtime::format_err!("socket address {v:?}: {e}"))?;
            }
            "backlog" => cfg.backlog = v.parse().map_err(|_| wasmtime::format_err!("backlog {v:?} is not a number"))?,
            "env" => {
                let (a, b) = v.split_once('=').unwrap_or((v, ""));
                cfg.env.push((a.to_string(), b.to_string()));
            }
            "arg" => cfg.args.push(v.to_string()),
            "root" => cfg.root = Some((v.to_string(), false)),
            "root_ro" => root_ro = v == "1",
            "memory_limit" => cfg.memory_limit = Some(v.parse()?),
            "max_requests" => cfg.max_requests = Some(v.parse::<usize>()?.max(1)),
            "artifact" => cfg.artifact = Some(v.to_string()),
            "threads" => cfg.threads = v.parse::<usize>()?.max(1),
            "pooling" => cfg.pooling = v != "0",
            "stdout_fd" => cfg.stdout_fd = Some(v.parse()?),
            "stderr_fd" => cfg.stderr_fd = Some(v.parse()?),
            "netns" => cfg.netns = Some(v.to_string()),
            "outgoing" => cfg.outgoing = v != "0",
            "file_caps" => cfg.file_caps = v != "0",
            "cpu_quota" => cfg.cpu_quota_us = v.parse()?,
            "cpu_period" => cfg.cpu_period_us = v.parse::<u64>()?.max(1),
            "nice" => cfg.nice = v.parse::<i32>()?.clamp(-20, 19),
            "cpus" => cfg.cpus.get_or_insert_with(Vec::new).push(v.parse().map_err(|_| wasmtime::format_err!("cpu {v:?} is not a number"))?),
            _ => wasmtime::bail!("unknown config key {k}"),
        }
    }
    if let Some(r) = cfg.root.as_mut() {
        r.1 = root_ro;
    }
    Ok(cfg)
}

/// Shared between the executor's thread (through the handle) and the server's runtime.
struct Shared {
    /// 0 serving, 1 draining (stop asked), 2 stopped (the runtime's threads are gone).
    state: AtomicI32,
    /// Hard stop asked (`bunwasi_http_abort`): no drain, guests are cut.
    aborted: AtomicBool,
    /// Requests whose guest has not finished yet.
    requests: AtomicU64,
    /// Open connections.
    connections: AtomicU64,
    /// Requests received since the start.
    served: AtomicU64,
    /// Requests that ended in a trap or host error (answered 500 when nothing was sent yet).
    failed: AtomicU64,
    /// How long the requests received took (see `Timing`).
    latency: Latency,
    stop: watch::Sender<bool>,
    /// Woken whenever a connection or a request ends (the drain waits on it).
    idle: Notify,
    /// The epoch ticker's thread, unparked when a request starts (it sleeps while none runs).
    ticker: std::sync::OnceLock<std::thread::Thread>,
    /// Tells the ticker to end (the server is stopping).
    ticker_stop: AtomicBool,
    /// The memory limit of all stores together, and what they hold.
    budget: Budget,
    /// Paused (`bunwasi_http_pause`): see `Shared::pause`. Told to async waiters through the
    /// channel, to a thread blocked in a guest's epoch callback through `wake`.
    paused: watch::Sender<bool>,
    /// Guarded by `gate`, notified by pause, resume, a CPU limit change and an abort: wakes the
    /// threads that wait in `wait_while_paused` and `hold_to_quota`.
    gate: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
    /// The CPU quota and what holding to it did.
    cpu: Cpu,
    /// The service's threads, for their CPU time and nice value.
    clocks: std::sync::Mutex<Clocks>,
}

impl Shared {
    fn new(memory_limit: Option<u64>, cfg_cpu: (i64, u64, i32), cpus: Option<&[u32]>) -> Self {
        Shared {
            state: AtomicI32::new(0),
            aborted: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Latency::default(),
            stop: watch::channel(false).0,
            idle: Notify::new(),
            ticker: std::sync::OnceLock::new(),
            ticker_stop: AtomicBool::new(false),
            budget: Budget::new(memory_limit),
            paused: watch::channel(false).0,
            gate: std::sync::Mutex::new(()),
            wake: std::sync::Condvar::new(),
            cpu: Cpu::new(cfg_cpu.0, cfg_cpu.1, cfg_cpu.2),
            clocks: std::sync::Mutex::new(Clocks { cpus: cpus.map(cpu_mask), ..Clocks::default() }),
        }
    }

    fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pause or resume, as runc's freezer does to a native server: while paused the listener
    /// stays open but nothing accepts (the kernel queues new connections in its backlog, up
    /// to the backlog's size), a request read on an open connection waits before its guest
    /// starts, and a guest running wasm stops its thread at its next epoch check (the caller
    /// bumps the epoch) until resumed. Nothing is refused; all of it goes on after resume.
    fn pause(&self, on: bool) {
        {
            let _g = self.gate.lock().unwrap();
            self.paused.send_replace(on);
        }
        self.wake.notify_all();
    }

    /// Wakes every thread of ours that waits (pause, quota): an abort, a new limit.
    fn wake_all(&self) {
        drop(self.gate.lock().unwrap());
        self.wake.notify_all();
    }

    /// On a worker thread, in a guest's epoch callback: blocks the thread while paused.
    fn wait_while_paused(&self) {
        let mut g = self.gate.lock().unwrap();
        while self.is_paused() && !self.aborted.load(Ordering::SeqCst) {
            g = self.wake.wait(g).unwrap();
        }
    }

    /// Before a request's guest starts: waits (without holding the thread) while paused.
    async fn until_resumed(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }

    /// On a worker thread (a guest's epoch callback, a request's start): while the service's
    /// threads together are over the CPU quota, this one sleeps until they are back within it,
    /// as CFS bandwidth control stops a cgroup's threads until its next period. See `Cpu`.
    fn hold_to_quota(&self) {
        let cpu = &self.cpu;
        let mut counted = false;
        let mut throttled = false;
        while !self.aborted.load(Ordering::SeqCst) {
            let quota = cpu.quota_us.load(Ordering::SeqCst);
            let period = cpu.period_us.load(Ordering::SeqCst).max(1);
            if quota <= 0 {
                return;
            }
            let debt = {
                let mut b = cpu.bucket.lock().unwrap();
                let (now, used) = (std::time::Instant::now(), self.cpu_ns());
                if b.as_ref().is_none_or(|b| b.limits != (quota, period)) {
                    // New limits (start, Update): a full bucket.
                    *b = Some(Bucket::new((quota, period), now, used));
                }
                b.as_mut().unwrap().debt(now, used)
            };
            if !counted {
                counted = true;
                cpu.checks.fetch_add(1, Ordering::Relaxed);
            }
            if debt == 0 {
                return;
            }
            if !throttled {
                throttled = true;
                cpu.throttled.fetch_add(1, Ordering::Relaxed);
            }
            // At most a period at a time: an Update, a pause or an abort is seen within one.
            let t0 = std::time::Instant::now();
            let g = self.gate.lock().unwrap();
            let _ = self.wake.wait_timeout(g, std::time::Duration::from_nanos(debt.min(period * 1000))).unwrap();
            cpu.throttled_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// The calling thread is one of the service's from now on (its CPU time counts, it gets the
    /// service's nice value and is confined to its CPUs). An error: it could not be confined.
    fn thread_started(&self) -> Result<()> {
        let Some(clock) = this_thread_clock() else { return Ok(()) };
        let tid = unsafe { gettid() };
        let nice = self.cpu.nice.load(Ordering::SeqCst);
        if nice != 0 {
            unsafe { setpriority(PRIO_PROCESS, tid as u32, nice) };
        }
        // Under the lock an Update's set_cpus takes: a thread starting meanwhile gets one or the
        // other cpuset, and is then moved with the others.
        let mut c = self.clocks.lock().unwrap();
        c.live.push((clock, tid));
        match &c.cpus {
            Some(mask) => confine(0, mask).map_err(|e| wasmtime::format_err!("cannot confine a thread of the service to its CPUs: {e}")),
            None => Ok(()),
        }
    }

    /// Moves every thread of the service to `cpus` (None: `free`, the caller's own CPUs), and the
    /// threads it starts from now on. 0, or the errno of the first thread that could not be moved.
    fn set_cpus(&self, cpus: Option<&[u32]>, free: &[u32]) -> i32 {
        let mut c = self.clocks.lock().unwrap();
        c.cpus = cpus.map(cpu_mask);
        let to = cpu_mask(cpus.unwrap_or(free));
        let mut first = 0;
        for (_, tid) in &c.live {
            if let Err(e) = confine(*tid, &to) {
                // Gone meanwhile (it is ending): nothing to move.
                if first == 0 && e.raw_os_error() != Some(3) {
                    first = e.raw_os_error().unwrap_or(-1);
                }
            }
        }
        first
    }

    /// The calling thread is about to end: its CPU time is kept as the retired threads'.
    fn thread_ending(&self) {
        let Some(clock) = this_thread_clock() else { return };
        let mut c = self.clocks.lock().unwrap();
        if let Some(i) = c.live.iter().position(|(k, _)| *k == clock) {
            c.live.swap_remove(i);
            c.retired_ns += clock_ns(CLOCK_THREAD_CPUTIME_ID).unwrap_or(0);
        }
    }

    /// CPU time of every thread the service has had (ns): the ones running (their clocks), and
    /// the ones that ended.
    fn cpu_ns(&self) -> u64 {
        let c = self.clocks.lock().unwrap();
        c.retired_ns + c.live.iter().filter_map(|(k, _)| clock_ns(*k)).sum::<u64>()
    }

    /// New CPU limits (an Update): the quota from the threads' next check, the nice value now.
    fn set_cpu(&self, quota_us: i64, period_us: u64, nice: i32) {
        self.cpu.period_us.store(period_us.max(1), Ordering::SeqCst);
        self.cpu.quota_us.store(quota_us, Ordering::SeqCst);
        let nice = nice.clamp(-20, 19);
        if self.cpu.nice.swap(nice, Ordering::SeqCst) != nice {
            for (_, tid) in &self.clocks.lock().unwrap().live {
                unsafe { setpriority(PRIO_PROCESS, *tid as u32, nice) };
            }
        }
        // A thread asleep over the old quota looks again.
        self.wake_all();
    }
}

/// The container's CPU limits over all of the service's threads together (a service has no
/// cgroup of its own in the daemon). A token bucket as src/engines/wasmtime/cpu-throttle.ts
/// keeps for a module's thread: at most one quota of CPU time in it, refilled at quota/period
/// of the wall time; the CPU time spent is the sum of the threads' own clocks
/// (`Shared::cpu_ns`). Each worker thread checks it at every epoch tick of a running guest
/// (every CPU_TICK while a quota is set) and before each request's guest starts; over it, the
/// thread sleeps until the bucket is back in credit. The counts are cpu.stat's: checks
/// (periods), checks that slept (throttled periods) and the time slept, summed over the threads.
struct Cpu {
    quota_us: std::sync::atomic::AtomicI64,
    period_us: AtomicU64,
    nice: AtomicI32,
    bucket: std::sync::Mutex<Option<Bucket>>,
    checks: AtomicU64,
    throttled: AtomicU64,
    throttled_ns: AtomicU64,
}

impl Cpu {
    fn new(quota_us: i64, period_us: u64, nice: i32) -> Self {
        Cpu {
            quota_us: std::sync::atomic::AtomicI64::new(quota_us),
            period_us: AtomicU64::new(period_us.max(1)),
            nice: AtomicI32::new(nice),
            bucket: std::sync::Mutex::new(None),
            checks: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            throttled_ns: AtomicU64::new(0),
        }
    }
}

/// CPU time the service may still use (ns), refilled at quota/period per ns of wall time up to
/// one quota.
struct Bucket {
    limits: (i64, u64),
    tokens: f64,
    wall: std::time::Instant,
    cpu: u64,
}

impl Bucket {
    fn new(limits: (i64, u64), wall: std::time::Instant, cpu: u64) -> Self {
        Bucket { limits, tokens: limits.0 as f64 * 1000.0, wall, cpu }
    }

    /// At `now`, the service having used `cpu` ns in all: how long to sleep (ns) before running on.
    fn debt(&mut self, now: std::time::Instant, cpu: u64) -> u64 {
        let quota = self.limits.0 as f64 * 1000.0;
        let rate = quota / (self.limits.1 as f64 * 1000.0);
        let refill = now.saturating_duration_since(self.wall).as_nanos() as f64 * rate;
        self.tokens = (self.tokens + refill).min(quota) - cpu.saturating_sub(self.cpu) as f64;
        self.wall = now;
        self.cpu = cpu;
        if self.tokens >= 0.0 { 0 } else { (-self.tokens / rate).ceil() as u64 }
    }
}

/// The service's threads: (CPU-time clock, tid) of each running one, and the CPU time of those
/// that ended.
#[derive(Default)]
struct Clocks {
    live: Vec<(i32, i32)>,
    retired_ns: u64,
    /// The CPUs the live threads are confined to (see `set_cpus`).
    cpus: Option<CpuMask>,
}

/// A cpu_set_t: 1024 CPUs, as glibc's.
type CpuMask = [u64; 16];

fn cpu_mask(cpus: &[u32]) -> CpuMask {
    let mut m = [0u64; 16];
    for &c in cpus.iter().filter(|c| **c < 1024) {
        m[(c / 64) as usize] |= 1 << (c % 64);
    }
    m
}

/// sched_setaffinity(2) of thread `tid` (0: the calling one).
fn confine(tid: i32, mask: &CpuMask) -> std::io::Result<()> {
    if unsafe { sched_setaffinity(tid, std::mem::size_of::<CpuMask>(), mask.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

unsafe extern "C" {
    fn pthread_self() -> usize;
    fn pthread_getcpuclockid(thread: usize, clock: *mut i32) -> c_int;
    fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> c_int;
    fn gettid() -> i32;
    fn setpriority(which: c_int, who: u32, prio: c_int) -> c_int;
    fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> c_int;
}
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
const PRIO_PROCESS: c_int = 0;

/// The calling thread's CPU-time clock, readable from any thread while this one lives.
fn this_thread_clock() -> Option<i32> {
    let mut clock = 0;
    (unsafe { pthread_getcpuclockid(pthread_self(), &mut clock) } == 0).then_some(clock)
}

fn clock_ns(clock: i32) -> Option<u64> {
    let mut ts = [0i64; 2];
    (unsafe { clock_gettime(clock, &mut ts) } == 0).then(|| ts[0] as u64 * 1_000_000_000 + ts[1] as u64)
}

/// The handle the executor holds.
pub struct Server {
    shared: Arc<Shared>,
    /// To bump the epoch on abort: every running guest traps at its next check.
    engine: Engine,
    port: u16,
    thread: Option<JoinHandle<()>>,
}

struct App {
    pre: ProxyPre<Host>,
    cfg: ServeConfig,
    shared: Arc<Shared>,
    /// A turn per guest running (`max_requests`; None: unbounded).
    turns: Option<Arc<tokio::sync::Semaphore>>,
    stdout: Option<OutputFile>,
    stderr: Option<OutputFile>,
    /// Where our own messages go (a trap, an accept error): the container's log.
    log: Log,
}

/// The caller's stderr (`stderr_fd`) when given, else the process's: in the daemon, the
/// container's log rather than the daemon's.
#[derive(Clone)]
struct Log(Option<Arc<std::fs::File>>);

impl Log {
    fn line(&self, msg: &str) {
        use std::io::Write;
        match &self.0 {
            Some(f) => {
                let _ = (&**f).write_all(format!("{msg}\n").as_bytes());
            }
            None => eprintln!("{msg}"),
        }
    }
}

impl App {
    fn new_store(&self) -> Result<Store<Host>> {
        if self.shared.aborted.load(Ordering::SeqCst) {
            wasmtime::bail!("the service is stopping");
        }
        let mut b = WasiCtxBuilder::new();
        // The guest's stdout and stderr are the executor's (containerd's fifos, so the
        // container's log), or the fds the caller gave (the daemon's copies of those fifos).
        match &self.stdout {
            Some(f) => b.stdout(f.clone()),
            None => b.inherit_stdout(),
        };
        match &self.stderr {
            Some(f) => b.stderr(f.clone()),
            None => b.inherit_stderr(),
        };
        b.envs(&self.cfg.env);
        b.args(&self.cfg.args);
        if let Some((dir, ro)) = &self.cfg.root {
            b.preopened_dir(dir, "/", if *ro { FsPerms::ReadOnly } else { FsPerms::ReadWrite })?;
        }
        let limits = Share { shared: self.shared.clone(), taken: 0 };
        let mut store =
            Store::new(self.pre.engine(), Host { table: ResourceTable::new(), wasi: b.build(), http: WasiHttpCtx::new(), hooks: Hooks { outgoing: self.cfg.outgoing }, limits });
        store.limiter(|h| &mut h.limits);
        // At each epoch tick (while requests run, see `tick`) a guest busy in wasm yields, so it
        // cannot starve the tasks queued behind it on its thread; after an abort it traps. A
        // pause stops its thread here, and so does the CPU quota while the service is over it.
        let shared = self.shared.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            shared.wait_while_paused();
            shared.hold_to_quota();
            if shared.aborted.load(Ordering::SeqCst) {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    async fn handle(self: Arc<Self>, req: hyper::Request<hyper::body::Incoming>) -> Result<hyper::Response<HyperOutgoingBody>> {
        // Paused: the request waits (its connection is read, nothing answers) until resumed.
        self.shared.until_resumed().await;
        if self.shared.aborted.load(Ordering::SeqCst) {
            wasmtime::bail!("the service is stopping");
        }
        // Over the CPU quota: this thread sleeps off the debt before another guest runs.
        self.shared.hold_to_quota();
        // A turn (`max_requests`), held until the guest's task is over and its store retired.
        let turn = match &self.turns {
            Some(t) => Some(t.clone().acquire_owned().await?),
            None => None,
        };
        // A store instantiated while this thread was idle, if there is one (see `Idle`).
        let (mut store, proxy) = match Idle::take_spare() {
            Some((mut store, proxy)) => {
                // Its epoch deadline counts from now, not from when it was made.
                store.set_epoch_deadline(1);
                (store, Some(proxy))
            }
            None => (self.new_store()?, None),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        let pre = self.pre.clone();
        let shared = self.shared.clone();
        if shared.requests.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(t) = shared.ticker.get() {
                t.unpark();
            }
        }
        // The guest runs in a task of its own: it may go on writing the body (or working)
        // after it has handed over the response.
        let task = tokio::task::spawn(async move {
            let r = async {
                let proxy = match proxy {
                    Some(p) => p,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            }
            .await;
            if shared.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.idle.notify_waiters();
            }
            Idle::retire(store);
            drop(turn);
            r
        });
        match rx.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(wasmtime::format_err!("guest answered with error {code:?}")),
            // The outparam was dropped unset: the guest trapped or returned without answering.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!("guest returned without setting a response")),
                Ok(Err(e)) => Err(e.context("guest trapped")),
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// A worker thread's work that need not delay a response: tearing down a finished request's
/// store (its pooled memory and tables are reset then) and instantiating the store the next
/// request will use. Both happen when the thread is about to sleep (tokio's before-park hook),
/// i.e. while the client reads its response, instead of between a request and its response:
/// one connection's latency was that much shorter. A busy thread rarely parks: there the next
/// finished request tears down the previous store, and requests instantiate their own.
/// Every request still gets a store and instance of its own, never used before; a spare is
/// only made earlier. What that changes for a guest: work it does while instantiated (a core
/// module's start function) happens before its request arrives.
#[derive(Default)]
struct Idle {
    /// The last finished request's store.
    spent: Option<Store<Host>>,
    /// A fresh store and instance for the next request.
    spare: Option<(Store<Host>, wasmtime_wasi_http::p2::bindings::Proxy)>,
    /// A task making the spare is under way.
    making: bool,
    /// Making a spare failed (a trap while instantiating): requests instantiate their own,
    /// and report the error as before.
    failed: bool,
}

thread_local! {
    static IDLE: std::cell::RefCell<Idle> = std::cell::RefCell::new(Idle::default());
}

impl Idle {
    fn take_spare() -> Option<(Store<Host>, wasmtime_wasi_http::p2::bindings::Proxy)> {
        IDLE.with(|i| i.borrow_mut().spare.take())
    }

    /// Keep `store` for the next park; the one kept before goes now (outside the borrow:
    /// dropping a store runs arbitrary host destructors).
    fn retire(store: Store<Host>) {
        let older = IDLE.with(|i| i.borrow_mut().spent.replace(store));
        drop(older);
    }

    /// The before-park hook of a worker's runtime.
    fn before_park(app: &Arc<App>) {
        let spent = IDLE.with(|i| i.borrow_mut().spent.take());
        drop(spent);
        if app.shared.state.load(Ordering::Relaxed) != 0 || app.shared.is_paused() {
            return;
        }
        let make = IDLE.with(|i| {
            let mut i = i.borrow_mut();
            let make = i.spare.is_none() && !i.making && !i.failed;
            i.making |= make;
            make
        });
        if make {
            // Spawned here, the runtime runs it before it sleeps.
            let app = app.clone();
            tokio::task::spawn(async move {
                let r = async {
                    let mut store = app.new_store()?;
                    let proxy = app.pre.instantiate_async(&mut store).await?;
                    Ok::<_, wasmtime::Error>((store, proxy))
                }
                .await;
                IDLE.with(|i| {
                    let mut i = i.borrow_mut();
                    i.making = false;
                    match r {
                        Ok(spare) => i.spare = Some(spare),
                        Err(_) => i.failed = true,
                    }
                });
            });
        }
    }

    /// At a worker's end, inside its runtime: drop what it kept.
    fn clear() {
        let idle = IDLE.with(|i| std::mem::take(&mut *i.borrow_mut()));
        drop(idle);
    }
}

/// Upper bounds of the request-latency buckets, in microseconds: Prometheus' usual spread from
/// 0.5 ms to 30 s (the daemon's kill-to-exit histogram uses the same, in seconds).
const LATENCY_BOUNDS_US: [u64; 15] =
    [500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000];

/// A service's request latencies: a count per bucket (not cumulative: an observation is one
/// increment; the reader adds them up) and their sum, in atomics that every worker thread
/// bumps without a lock and that the caller reads while they do (`bunwasi_http_latency`).
/// A reader may see a count whose duration is not in the sum yet, or the other way round:
/// one observation off, for one scrape.
#[derive(Default)]
struct Latency {
    /// One per bound of LATENCY_BOUNDS_US, then the requests above the last.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    fn observe(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // A bucket counts what is at most its bound (Prometheus' "le").
        let i = LATENCY_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts per bucket, then the sum: LATENCY_WORDS words.
    fn read(&self) -> [u64; LATENCY_WORDS] {
        let mut out = [0; LATENCY_WORDS];
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            *o = b.load(Ordering::Relaxed);
        }
        out[LATENCY_WORDS - 1] = self.sum_us.load(Ordering::Relaxed);
        out
    }
}

/// What `bunwasi_http_latency` writes: a count per bucket, then the sum.
const LATENCY_WORDS: usize = LATENCY_BOUNDS_US.len() + 2;

/// One request's time, from its head read to the end of its response's body, observed once
/// when dropped: at the body's end, or when the request ends otherwise (the guest failed
/// without an answer, the client went away, the service was aborted). So every request
/// received is observed once, and `served` equals the histogram's count once none is open.
struct Timing {
    start: std::time::Instant,
    shared: Arc<Shared>,
}

impl Timing {
    fn start(shared: Arc<Shared>) -> Self {
        Timing { start: std::time::Instant::now(), shared }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        self.shared.latency.observe(self.start.elapsed());
    }
}

/// A response body that ends its request's `Timing` when it ends (its last frame was taken,
/// an error frame, or it is dropped: hyper drops a body it knows has ended without polling
/// it for the end). No allocation: it wraps the body in place.
struct Timed<B> {
    body: B,
    timing: Option<Timing>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Timed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if matches!(r, std::task::Poll::Ready(None | Some(Err(_)))) {
            this.timing.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn error_response() -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(bytes::Bytes::from_static(b"500 Internal Server Error\n")).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder()
        .status(500)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("static response")
}

async fn serve_connection(app: Arc<App>, stream: tokio::net::TcpStream, mut stop: watch::Receiver<bool>) {
    // Nagle left on (as `wasmtime serve`): the head, the body and its end go out together.
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move {
            // Its head is read: the request's time starts now, and ends with its response body
            // (or with the request, dropped unanswered).
            let timing = Timing::start(app.shared.clone());
            app.shared.served.fetch_add(1, Ordering::Relaxed);
            let resp = match app.clone().handle(req).await {
                Ok(r) => r,
                // Aborted (the guest trapped on the epoch, or was never started): no answer,
                // hyper closes the connection, as the end of an executor would.
                Err(_) if app.shared.aborted.load(Ordering::SeqCst) => return Err(std::io::Error::other("the service was aborted")),
                Err(e) => {
                    app.shared.failed.fetch_add(1, Ordering::Relaxed);
                    app.log.line(&format!("bunwasi: http: request failed: {e:?}"));
                    error_response()
                }
            };
            Ok::<_, std::io::Error>(resp.map(|body| Timed { body, timing: Some(timing) }))
        }
    });
    let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            // Stop: idle keep-alive connections close now, busy ones after their response.
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_ok() { conn.as_mut().graceful_shutdown(); }
            }
        }
    }
}

/// The threads that serve connections: a current-thread tokio runtime each, and a connection
/// stays on the thread it was handed to (round robin) with its requests and their guests, as
/// actix-web and nginx's workers do. Against one multi-thread runtime (tokio's work stealing,
/// the shape runwasi and `wasmtime serve` use) this took the server's CPU per request at 50
/// connections from 49-57 µs to 30-33 (same build, same run): no task migrates between cores
/// and no worker wakes another. The price: a guest that computes for long holds up the other
/// connections of its thread (a multi-thread runtime would let the other threads take them).
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    fn spawn_connection(&self, stream: tokio::net::TcpStream, log: &Log, serve: impl FnOnce(tokio::net::TcpStream) -> ConnFuture + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        // The stream is registered with the accepting runtime's reactor: move it to the worker's.
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return log.line(&format!("bunwasi: http: connection: {e}")),
        };
        let log = log.clone();
        self.handles[i].spawn(async move {
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => serve(s).await,
                Err(e) => log.line(&format!("bunwasi: http: connection: {e}")),
            }
        });
    }
}

type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn serve(app: Arc<App>, listener: std::net::TcpListener, mut stop: watch::Receiver<bool>, workers: Workers) {
    let shared = app.shared.clone();
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            app.log.line(&format!("bunwasi: http: listener: {e}"));
            return;
        }
    };
    // Paused: the listener stays open and nothing accepts; the kernel queues the connections
    // (up to the backlog) until resume, as for a frozen process's listening socket.
    let mut paused = shared.paused.subscribe();
    loop {
        let hold = *paused.borrow_and_update();
        // Biased, in this order: a stop or a pause that came before a connection is seen first.
        // Unbiased, select! picks among ready branches at random: a connection made after a
        // pause could be accepted, and its request read, while paused.
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // A stop asked before this loop first looked (the receiver saw it as its initial value).
            _ = std::future::ready(()), if *stop.borrow() => break,
            _ = paused.changed() => {}
            r = listener.accept(), if !hold => match r {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let log = app.log.clone();
                    let (app, rx, shared) = (app.clone(), shared.stop.subscribe(), shared.clone());
                    workers.spawn_connection(stream, &log, move |stream| Box::pin(async move {
                        serve_connection(app, stream, rx).await;
                        if shared.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
                            shared.idle.notify_waiters();
                        }
                    }));
                }
                // EMFILE and friends: keep serving the connections we have.
                Err(e) => {
                    app.log.line(&format!("bunwasi: http: accept: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Stop accepting: the listening socket closes, new connections are refused.
    drop(listener);
    loop {
        let idle = shared.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if shared.aborted.load(Ordering::SeqCst)
            || (shared.connections.load(Ordering::SeqCst) == 0 && shared.requests.load(Ordering::SeqCst) == 0)
        {
            break;
        }
        idle.await;
    }
}

/// How often a guest busy in wasm yields to the runtime (as `wasmtime serve`'s epoch period).
const TICK: std::time::Duration = std::time::Duration::from_millis(50);
/// The tick while the service has a CPU quota: how often a busy guest's thread checks it (as
/// a module's in the daemon, src/engines/wasmtime/cpu-throttle.ts CPU_TICK_MS).
const CPU_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Moves the engine's epoch every TICK while any request runs, and not at all while none
/// does (parked: an idle service costs no wakeups). Without it a guest spinning in wasm would
/// keep its worker thread, and the other connections of that thread (see `Workers`) would
/// wait for ever. A thread of its own, not a task: a task needs a worker, and the spinning
/// guest holds its own.
fn tick(engine: Engine, shared: Arc<Shared>) {
    // One of the service's threads: on its CPUs (its work is the service's), its time counted.
    // Confined or not, it runs no guest: a failure to confine it stops nothing.
    let _ = shared.thread_started();
    while !shared.ticker_stop.load(Ordering::SeqCst) {
        if shared.requests.load(Ordering::SeqCst) == 0 {
            // A request that starts after the check unparks first: park then returns at once.
            std::thread::park();
            continue;
        }
        // A CPU quota is held at the ticks: finer ones while there is one.
        std::thread::sleep(if shared.cpu.quota_us.load(Ordering::SeqCst) > 0 { CPU_TICK } else { TICK });
        engine.increment_epoch();
    }
    shared.thread_ending();
}

fn bind(cfg: &ServeConfig) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(cfg.addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&cfg.addr.into()).map_err(|e| wasmtime::format_err!("bind {}: {e}", cfg.addr))?;
    sock.listen(cfg.backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

unsafe extern "C" {
    /// glibc's setns(2): moves the calling thread only.
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    /// glibc's capget(2) and capset(2): the calling thread's capabilities (pid 0).
    fn capget(header: *mut u32, data: *mut u32) -> c_int;
    fn capset(header: *mut u32, data: *const u32) -> c_int;
}
const CLONE_NEWNET: c_int = 0x4000_0000;

/// The capabilities that override a file's permissions: CAP_CHOWN, CAP_DAC_OVERRIDE,
/// CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID.
const FILE_CAPS: u32 = 0b1_1111;

/// The calling thread gives up FILE_CAPS, effective and permitted, for good; the threads it
/// starts inherit that. A host that is root for many containers (the shared-mode daemon) asks
/// for it: a guest's files are then checked by its view's idmapped mount and the mode bits
/// alone (src/linux/idmap.ts), whichever of our threads touches them.
fn drop_file_caps() -> Result<()> {
    let (mut header, mut data) = this_thread_caps()?;
    data[0] &= !FILE_CAPS;
    data[1] &= !FILE_CAPS;
    if unsafe { capset(header.as_mut_ptr(), data.as_ptr()) } != 0 {
        wasmtime::bail!("capset: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's capability header and sets: _LINUX_CAPABILITY_VERSION_3, pid 0; then
/// {effective, permitted, inheritable} for capabilities 0-31 and 32-63.
fn this_thread_caps() -> Result<([u32; 2], [u32; 6])> {
    let mut header = [0x2008_0522u32, 0];
    let mut data = [0u32; 6];
    if unsafe { capget(header.as_mut_ptr(), data.as_mut_ptr()) } != 0 {
        wasmtime::bail!("capget: {}", std::io::Error::last_os_error());
    }
    Ok((header, data))
}

/// How a thread of ours starts: in the service's network namespace, without the capabilities
/// over files, as asked.
#[derive(Clone)]
struct ThreadSetup {
    netns: Option<Arc<Netns>>,
    drop_caps: bool,
}

impl ThreadSetup {
    fn apply(&self) -> Result<()> {
        if let Some(ns) = &self.netns {
            ns.enter()?;
        }
        if self.drop_caps {
            drop_file_caps()?;
        }
        Ok(())
    }

    /// For a thread tokio starts (a blocking-pool thread). It inherited both from the worker
    /// thread that started it, so a failure here still leaves it right, unless it does not: the
    /// process then stops rather than serve a pod from the host's namespace or as root.
    fn apply_or_abort(&self, log: &Log) {
        if let Err(e) = self.apply() {
            let ns_ok = self.netns.as_ref().is_none_or(|ns| ns.is_current());
            let caps_ok = !self.drop_caps || this_thread_caps().is_ok_and(|(_, d)| (d[0] | d[1]) & FILE_CAPS == 0);
            if !(ns_ok && caps_ok) {
                log.line(&format!("bunwasi: http: {e:#}; stopping"));
                std::process::abort();
            }
        }
    }
}

/// The network namespace a service's sockets are made in, when it is not the caller's (the
/// shared-mode daemon serves a pod's service from its own namespace). A socket belongs for its
/// whole life to the namespace of the thread that created it, and setns(CLONE_NEWNET) moves
/// only the calling thread; so the threads of ours that make sockets enter the namespace at
/// their start and never leave it (they end with the service): the listener is bound on a
/// short-lived thread, and each worker thread, where a guest's outgoing requests connect,
/// enters before it runs anything, as does each thread of its blocking pool (where a host
/// name is looked up). Nothing of the caller's threads changes namespace.
struct Netns {
    path: String,
    file: std::fs::File,
}

impl Netns {
    fn open(path: &str) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| wasmtime::format_err!("network namespace {path}: {e}"))?;
        Ok(Netns { path: path.to_string(), file })
    }

    /// Move the calling thread into the namespace.
    fn enter(&self) -> Result<()> {
        if unsafe { setns(self.file.as_raw_fd(), CLONE_NEWNET) } != 0 {
            wasmtime::bail!("network namespace {}: setns: {}", self.path, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The calling thread is in the namespace already (a thread inherits its creator's).
    fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::metadata("/proc/thread-self/ns/net")) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

/// Bind as `bind` does, in `netns` when given (on a thread of its own, which ends here).
fn bind_in(cfg: &ServeConfig, netns: Option<&Netns>) -> Result<std::net::TcpListener> {
    let Some(ns) = netns else { return bind(cfg) };
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter()?;
            bind(cfg)
        })
        .join()
        .map_err(|_| wasmtime::format_err!("panic while binding"))?
    })
}

fn load(engine: &Engine, src: &[u8], artifact: Option<&str>, log: &Log) -> Result<Component> {
    if let Some(path) = artifact {
        // Only the executor's read-only compile cache passes a path here, filled by the shim
        // with `bunwasi_http_compile` of this same library (the cache key names it).
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(c) => return Ok(c),
            Err(e) => log.line(&format!("bunwasi: http: cached artifact unusable, compiling: {e}")),
        }
    }
    Component::new(engine, src)
}

/// Our own copy of a caller's fd (close-on-exec), as a file the guest's output goes to.
fn own_copy(fd: Option<i32>) -> Result<Option<std::fs::File>> {
    let Some(fd) = fd else { return Ok(None) };
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().map_err(|e| wasmtime::format_err!("fd {fd}: {e}"))?;
    Ok(Some(std::fs::File::from(owned)))
}

fn start(cfg_bytes: &[u8], src: &[u8]) -> Result<Server> {
    let mut cfg = parse_config(cfg_bytes)?;
    let stdout = own_copy(cfg.stdout_fd)?;
    let stderr = own_copy(cfg.stderr_fd)?;
    let log = Log(match &stderr {
        Some(f) => Some(Arc::new(f.try_clone()?)),
        None => None,
    });
    let (stdout, stderr) = (stdout.map(OutputFile::new), stderr.map(OutputFile::new));
    let netns = match &cfg.netns {
        Some(path) => Some(Arc::new(Netns::open(path)?)),
        None => None,
    };
    let engine = serving_engine(cfg.pooling)?;
    let component = load(&engine, src, cfg.artifact.as_deref(), &log)?;
    // A preopened directory costs an open per request: only a component that imports
    // wasi:filesystem gets one (the proxy world has none).
    let uses_fs = component.component_type().imports(&engine).any(|(name, _)| name.starts_with("wasi:filesystem/"));
    if !uses_fs {
        cfg.root = None;
    }
    let mut linker = Linker::<Host>::new(&engine);
    // All of WASI 0.2 (as for command components) plus wasi:http's own interfaces.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| wasmtime::format_err!("link: {e}"))?;
    let pre = ProxyPre::new(pre).map_err(|e| wasmtime::format_err!("not a wasi:http proxy: {e}"))?;
    let listener = bind_in(&cfg, netns.as_deref())?;
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared::new(cfg.memory_limit, (cfg.cpu_quota_us, cfg.cpu_period_us, cfg.nice), cfg.cpus.as_deref()));
    let engine = pre.engine().clone();
    let turns = cfg.max_requests.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let app = Arc::new(App { pre, cfg, shared: shared.clone(), turns, stdout, stderr, log });
    // Subscribed before the handle exists, so a stop asked at once is seen.
    let stop_rx = shared.stop.subscribe();
    // The workers run until the accept loop has drained (or the service was aborted), then end
    // with whatever is left (a guest still running after its response) cancelled. If a start
    // fails below, `exit` is dropped and the workers started so far end too.
    let (exit, _) = watch::channel(false);
    let mut handles = vec![];
    let mut joins = vec![];
    // Each worker says whether its setup (namespace, capabilities) held before it runs anything.
    let (entered_tx, entered) = std::sync::mpsc::channel::<Result<()>>();
    let setup = ThreadSetup { netns: netns.clone(), drop_caps: !app.cfg.file_caps };
    for i in 0..app.cfg.threads {
        let idle_app = app.clone();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all().on_thread_park(move || Idle::before_park(&idle_app));
        // Its blocking pool's threads (file I/O, name lookups): set up as the worker, and
        // counted as the service's (CPU time, nice value) while they live.
        let (setup_pool, log, started, ending) = (setup.clone(), app.log.clone(), shared.clone(), shared.clone());
        builder.on_thread_start(move || {
            if setup_pool.netns.is_some() || setup_pool.drop_caps {
                setup_pool.apply_or_abort(&log);
            }
            // It inherited the worker's CPUs, which are the service's: a failure leaves it right.
            if let Err(e) = started.thread_started() {
                log.line(&format!("bunwasi: http: {e:#}"));
            }
        });
        builder.on_thread_stop(move || ending.thread_ending());
        // Named as the worker is: the caller tells the service's threads by name (a caller that
        // keeps other threads off a cpuset leaves these to the service's own).
        builder.thread_name(format!("bunwasi-http-{i}"));
        let rt = builder.build()?;
        handles.push(rt.handle().clone());
        let mut rx = exit.subscribe();
        let (setup, entered_tx, counted) = (setup.clone(), entered_tx.clone(), shared.clone());
        joins.push(std::thread::Builder::new().name(format!("bunwasi-http-{i}")).spawn(move || {
            let r = setup.apply().and_then(|()| counted.thread_started());
            let ok = r.is_ok();
            let _ = entered_tx.send(r);
            if !ok {
                counted.thread_ending();
                return;
            }
            rt.block_on(async move {
                let _ = rx.wait_for(|v| *v).await;
                Idle::clear();
            });
            // Joined (its blocking threads too), so a host that lives on keeps none of them.
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
            counted.thread_ending();
        })?);
    }
    drop(entered_tx);
    for _ in 0..joins.len() {
        // A worker that could not enter has ended; the others end when `exit` drops with this error.
        entered.recv().map_err(|_| wasmtime::format_err!("a worker thread ended at its start"))??;
    }
    // The accept loop (and the drain) on a thread of its own.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let workers = Workers { handles, next: std::sync::atomic::AtomicUsize::new(0) };
    let done = shared.clone();
    let main_log = app.log.clone();
    let (tick_engine, tick_shared) = (engine.clone(), shared.clone());
    let ticker = std::thread::Builder::new().name("bunwasi-http-tick".into()).spawn(move || tick(tick_engine, tick_shared))?;
    let _ = shared.ticker.set(ticker.thread().clone());
    let thread = std::thread::Builder::new().name("bunwasi-http-main".into()).spawn(move || {
        if let Err(e) = done.thread_started() {
            // Started from the caller's thread, on its CPUs: it accepts, it does not run guests.
            main_log.line(&format!("bunwasi: http: {e:#}"));
        }
        rt.block_on(serve(app, listener, stop_rx, workers));
        // In-flight work is done (or aborted: its guests trap at their next epoch check);
        // anything left is cancelled with the runtimes, whose threads are joined before the
        // state says stopped, so a host that lives on (the daemon) keeps none of them.
        exit.send_replace(true);
        for j in joins {
            let _ = j.join();
        }
        rt.shutdown_timeout(std::time::Duration::from_secs(10));
        done.thread_ending();
        done.ticker_stop.store(true, Ordering::SeqCst);
        ticker.thread().unpark();
        let _ = ticker.join();
        done.state.store(2, Ordering::SeqCst);
    });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            // The ticker must not outlive a start that failed.
            shared.ticker_stop.store(true, Ordering::SeqCst);
            if let Some(t) = shared.ticker.get() {
                t.unpark();
            }
            return Err(e.into());
        }
    };
    Ok(Server { shared, engine, port, thread: Some(thread) })
}

// ---- C ABI (bound in src/engines/wasmtime/http/ffi.ts) ----

unsafe fn slice<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || p.is_null() { &[] } else { unsafe { std::slice::from_raw_parts(p, len) } }
}

/// Write `msg` NUL-terminated into `err` (capacity `cap`), truncated.
unsafe fn write_err(err: *mut u8, cap: usize, msg: &str) {
    if err.is_null() || cap == 0 {
        return;
    }
    let n = msg.len().min(cap - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err.add(n) = 0;
    }
}

/// This build's identity (NUL-terminated, static).
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_version() -> *const c_char {
    VERSION.as_ptr() as *const c_char
}

/// Compile a component for the compile cache. On success *out/*out_len hold the serialized
/// bytes (free with `bunwasi_http_bytes_free`) and 0 is returned; on failure -1 and a message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_compile(
    src: *const u8,
    len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
    err: *mut u8,
    err_cap: usize,
) -> c_int {
    let r = std::panic::catch_unwind(|| -> Result<Vec<u8>> {
        let engine = engine()?;
        Component::new(&engine, unsafe { slice(src, len) })?.serialize()
    });
    match r {
        Ok(Ok(bytes)) => {
            let b = bytes.into_boxed_slice();
            unsafe {
                *out_len = b.len();
                *out = Box::into_raw(b) as *mut u8;
            }
            0
        }
        Ok(Err(e)) => {
            unsafe { write_err(err, err_cap, &format!("{e:#}")) };
            -1
        }
        Err(_) => {
            unsafe { write_err(err, err_cap, "panic while compiling") };
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_bytes_free(p: *mut u8, len: usize) {
    if !p.is_null() {
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
    }
}

/// Compile (or map the artifact), link, bind and start serving on threads of our own.
/// Returns the server, or null with the reason in `err`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_start(
    cfg: *const u8,
    cfg_len: usize,
    src: *const u8,
    src_len: usize,
    err: *mut u8,
    err_cap: usize,
) -> *mut Server {
    let r = std::panic::catch_unwind(|| start(unsafe { slice(cfg, cfg_len) }, unsafe { slice(src, src_len) }));
    unsafe { started(r, err, err_cap) }
}

unsafe fn started(r: std::thread::Result<Result<Server>>, err: *mut u8, err_cap: usize) -> *mut Server {
    match r {
        Ok(Ok(s)) => Box::into_raw(Box::new(s)),
        Ok(Err(e)) => {
            unsafe { write_err(err, err_cap, &format!("{e:#}")) };
            std::ptr::null_mut()
        }
        Err(_) => {
            unsafe { write_err(err, err_cap, "panic while starting") };
            std::ptr::null_mut()
        }
    }
}

/// The port actually bound (useful with port 0).
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_port(s: &Server) -> u32 {
    s.port as u32
}

/// Stop accepting and drain: returns at once; poll `bunwasi_http_state` until 2.
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_stop(s: &Server) {
    let _ = s.shared.state.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    s.shared.stop.send_replace(true);
}

/// Hard stop (SIGKILL in the daemon): stop accepting, close every connection, trap every
/// running guest (epoch) and cancel the rest; returns at once; poll `bunwasi_http_state` until 2.
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_abort(s: &Server) {
    s.shared.aborted.store(true, Ordering::SeqCst);
    bunwasi_http_stop(s);
    s.engine.increment_epoch();
    s.shared.idle.notify_waiters();
    // A paused service ends too (as SIGKILL ends a frozen process): its waits let go.
    s.shared.pause(false);
    s.shared.wake_all();
}

/// Pause (1) or resume (0) the service (see `Shared::pause`); returns at once: a guest busy in
/// wasm stops at its next epoch check, which the bump here makes immediate.
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_pause(s: &Server, on: c_int) {
    if s.shared.aborted.load(Ordering::SeqCst) {
        return;
    }
    s.shared.pause(on != 0);
    if on != 0 {
        s.engine.increment_epoch();
    }
}

/// New CPU limits for the running service (an Update): `quota_us` per `period_us` over all of
/// its threads (<= 0: none), and their nice value.
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_set_cpu(s: &Server, quota_us: i64, period_us: u64, nice: c_int) {
    s.shared.set_cpu(quota_us, period_us, nice);
    // A guest busy in wasm reaches its check at once.
    s.engine.increment_epoch();
}

/// A new memory limit for all of the service's stores together (u64::MAX: none): 0 once set,
/// -1 (nothing changed) when they already hold more than it (counter 4 says how much).
/// Moves every thread of the service to the `len` CPUs at `cpus` (len 0: to the `free_len` at
/// `free`, the caller's own). 0, or the errno of a thread that could not be moved.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_set_cpus(s: &Server, cpus: *const u32, len: usize, free: *const u32, free_len: usize) -> c_int {
    let (cpus, free) = unsafe { (std::slice::from_raw_parts(cpus, len), std::slice::from_raw_parts(free, free_len)) };
    s.shared.set_cpus(if len == 0 { None } else { Some(cpus) }, free)
}

#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_set_memory_limit(s: &Server, bytes: u64) -> c_int {
    if s.shared.budget.set_limit(bytes) { 0 } else { -1 }
}

/// 0 serving, 1 draining, 2 stopped (no connection, no guest and no thread of ours left).
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_state(s: &Server) -> c_int {
    s.shared.state.load(Ordering::SeqCst)
}

/// Counters: 0 requests in flight, 1 open connections, 2 requests received, 3 requests failed,
/// 4 bytes the stores hold (memories and tables), 5 the memory limit (u64::MAX: none), 6 CPU
/// time of the service's threads (ns), 7 quota checks, 8 of them throttled, 9 ns slept by the
/// throttle (summed over the threads), 10 paused (1) or not.
#[unsafe(no_mangle)]
pub extern "C" fn bunwasi_http_counter(s: &Server, which: c_int) -> u64 {
    let sh = &s.shared;
    let c = match which {
        0 => &sh.requests,
        1 => &sh.connections,
        2 => &sh.served,
        3 => &sh.failed,
        4 => &sh.budget.used,
        5 => &sh.budget.limit,
        6 => return sh.cpu_ns(),
        7 => &sh.cpu.checks,
        8 => &sh.cpu.throttled,
        9 => &sh.cpu.throttled_ns,
        10 => return sh.is_paused() as u64,
        _ => return 0,
    };
    c.load(Ordering::SeqCst)
}

/// The request-latency buckets' upper bounds, in microseconds, ascending: writes them into
/// `out` when it holds `cap` >= their number, and returns their number (N) either way.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_latency_bounds(out: *mut u64, cap: usize) -> usize {
    if !out.is_null() && cap >= LATENCY_BOUNDS_US.len() {
        unsafe { std::ptr::copy_nonoverlapping(LATENCY_BOUNDS_US.as_ptr(), out, LATENCY_BOUNDS_US.len()) };
    }
    LATENCY_BOUNDS_US.len()
}

/// The requests' latency since the start (from a request's head read to its response body's
/// end, or to its failure): N+1 counts (one per bound of `bunwasi_http_latency_bounds`, not
/// cumulative, then those above the last bound), then the sum of every request's time in
/// microseconds. Writes them into `out` when `cap` >= N+2, and returns N+2 either way.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_latency(s: &Server, out: *mut u64, cap: usize) -> usize {
    if !out.is_null() && cap >= LATENCY_WORDS {
        let words = s.shared.latency.read();
        unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), out, LATENCY_WORDS) };
    }
    LATENCY_WORDS
}

/// Free a stopped server (joins its thread). A server still running is left alone (the
/// process is about to exit) and 0 is returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bunwasi_http_free(s: *mut Server) -> c_int {
    if s.is_null() {
        return 1;
    }
    let server: &Server = unsafe { &*s };
    if server.shared.state.load(Ordering::SeqCst) != 2 {
        return 0;
    }
    let mut s = unsafe { Box::from_raw(s) };
    if let Some(t) = s.thread.take() {
        let _ = t.join();
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(None, (0, 100_000, 0)))
    }

    #[test]
    fn bounds_ascend() {
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observations_land_in_their_bucket_and_the_sum() {
        let l = Latency::default();
        // At a bound: that bucket (le); just above: the next; above the last: the overflow one.
        l.observe(Duration::from_micros(500));
        l.observe(Duration::from_micros(501));
        l.observe(Duration::from_micros(0));
        l.observe(Duration::from_secs(31));
        l.observe(Duration::from_millis(20));
        let w = l.read();
        let mut want = [0u64; LATENCY_WORDS];
        want[0] = 2; // 0 and 500 µs
        want[1] = 1; // 501 µs
        want[5] = 1; // 20 ms <= 25 ms
        want[LATENCY_BOUNDS_US.len()] = 1; // 31 s
        want[LATENCY_WORDS - 1] = 500 + 501 + 31_000_000 + 20_000;
        assert_eq!(w, want);
    }

    #[test]
    fn a_body_read_to_its_end_is_timed_once() {
        let s = shared();
        let body = Timed { body: Full::new(bytes::Bytes::from_static(b"hello")), timing: Some(Timing::start(s.clone())) };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        let w = s.latency.read();
        assert_eq!(w[..LATENCY_WORDS - 1].iter().sum::<u64>(), 1);
    }

    #[test]
    fn a_body_dropped_unread_and_a_request_never_answered_are_timed_once_each() {
        let s = shared();
        drop(Timed { body: Full::new(bytes::Bytes::from_static(b"x")), timing: Some(Timing::start(s.clone())) });
        drop(Timing::start(s.clone()));
        let w = s.latency.read();
        assert_eq!(w[..LATENCY_WORDS - 1].iter().sum::<u64>(), 2);
    }

    #[test]
    fn the_c_calls_write_only_with_room() {
        let mut bounds = [0u64; LATENCY_BOUNDS_US.len()];
        assert_eq!(unsafe { bunwasi_http_latency_bounds(bounds.as_mut_ptr(), 3) }, LATENCY_BOUNDS_US.len());
        assert_eq!(bounds, [0; LATENCY_BOUNDS_US.len()]);
        assert_eq!(unsafe { bunwasi_http_latency_bounds(bounds.as_mut_ptr(), bounds.len()) }, LATENCY_BOUNDS_US.len());
        assert_eq!(bounds, LATENCY_BOUNDS_US);
    }
}
