//! Versatile Abaco test actor (image `abaco-test/actor:latest`, binary `/actor`), std only.
//!
//! Every step is driven by an environment variable and runs in this order:
//!
//! 1. prints `MSG=<MSG>` (or `MSG unset`), then every variable whose name starts with `_abaco`
//!    or `_actor`, sorted by name, as `NAME=value`;
//! 2. if `/_abaco_binary_data` exists (regular file or FIFO), reads it to EOF in 64 KiB chunks
//!    and prints `BINARY_LEN=<n>` and `BINARY_FNV=<16 hex digits>` (FNV-1a 64), or
//!    `BINARY_ERROR=<why>`;
//! 3. `RESULTS=a,b,c`: sends each non-empty item as one datagram to `/_abaco_results.sock`, plus
//!    the BINARY_FNV hex string when `RESULT_BINARY_FNV=1`; prints `RESULTS_SENT=<n>` or
//!    `RESULTS_ERROR=<why>` (`RESULT_BINARY_FNV=1` alone also sends);
//! 4. `SPAM_LINES=<n>`: prints `line <i> xxx…` for i in 0..n;
//! 5. `NONUTF8=1`: writes the raw bytes `\xff\xfe bad utf8 \xc3\x28\n`;
//! 6. `ALLOC_MB=<n>`: allocates n MiB, touches every page, prints `ALLOCATED=<n>`;
//! 7. `SLEEP_MS=<n>`: prints `SLEEP_START=<unix ms>`, sleeps, prints `SLEEP_END=<unix ms>`;
//! 8. `STDERR=<text>`: prints text to stderr;
//! 9. exits with `EXIT_CODE` (default 0).
//!
//! SIGTERM/SIGINT (otherwise ignored by the kernel for PID 1 without a handler) set a flag;
//! the sleep, spam and alloc loops check it, print `STOPPED=SIGTERM` and exit 143.
//! A malformed number exits 2 with a message on stderr.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BINARY_PATH: &str = "/_abaco_binary_data";
const RESULTS_SOCKET: &str = "/_abaco_results.sock";
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const SIG_ERR: usize = usize::MAX;

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
}

extern "C" fn on_terminate(_sig: i32) {
    // Only an atomic store: async-signal-safe.
    TERMINATED.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    for sig in [SIGTERM, SIGINT] {
        let handler = on_terminate as extern "C" fn(i32) as usize;
        // SAFETY: `signal` is the libc function; the handler only stores to an atomic.
        if unsafe { signal(sig, handler) } == SIG_ERR {
            eprintln!("testactor: could not install the handler for signal {sig}");
        }
    }
}

/// Buffered stdout whose write errors (e.g. a closed pipe) are ignored.
struct Out(BufWriter<io::Stdout>);

impl Out {
    fn bytes(&mut self, bytes: &[u8]) {
        let _ = self.0.write_all(bytes);
    }
    fn line(&mut self, text: &str) {
        self.bytes(text.as_bytes());
        self.bytes(b"\n");
    }
    fn flush(&mut self) {
        let _ = self.0.flush();
    }
    /// Exits 143 if SIGTERM/SIGINT arrived.
    fn check_terminated(&mut self) {
        if TERMINATED.load(Ordering::SeqCst) {
            self.line("STOPPED=SIGTERM");
            self.flush();
            process::exit(143);
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Parses a numeric variable; exits 2 on a malformed value.
fn number<T: std::str::FromStr>(out: &mut Out, name: &str) -> Option<T> {
    let raw = var(name)?;
    match raw.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            out.flush();
            eprintln!("testactor: {name}={raw:?} is not a valid number");
            process::exit(2);
        }
    }
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn print_env(out: &mut Out) {
    match std::env::var_os("MSG") {
        Some(msg) => {
            out.bytes(b"MSG=");
            out.bytes(msg.as_bytes());
            out.bytes(b"\n");
        }
        None => out.line("MSG unset"),
    }
    let mut vars: Vec<_> = std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.as_bytes();
            name.starts_with(b"_abaco") || name.starts_with(b"_actor")
        })
        .collect();
    vars.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, value) in vars {
        out.bytes(name.as_bytes());
        out.bytes(b"=");
        out.bytes(value.as_bytes());
        out.bytes(b"\n");
    }
}

/// Reads the binary message to EOF; returns the FNV-1a 64 hex string.
fn read_binary(out: &mut Out) -> Option<String> {
    if std::fs::symlink_metadata(BINARY_PATH).is_err() {
        return None;
    }
    out.flush(); // opening a FIFO blocks until a writer appears
    let result = (|| -> io::Result<(u64, u64)> {
        let mut file = File::open(BINARY_PATH)?;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut len, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return Ok((len, hash)),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for &b in &buf[..n] {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            len += n as u64;
        }
    })();
    match result {
        Ok((len, hash)) => {
            let hex = format!("{hash:016x}");
            out.line(&format!("BINARY_LEN={len}"));
            out.line(&format!("BINARY_FNV={hex}"));
            Some(hex)
        }
        Err(e) => {
            out.line(&format!("BINARY_ERROR={e}"));
            None
        }
    }
}

fn send_results(out: &mut Out, binary_fnv: Option<&str>) {
    let mut items: Vec<Vec<u8>> = Vec::new();
    let results = std::env::var_os("RESULTS");
    if let Some(results) = &results {
        items.extend(
            results
                .as_bytes()
                .split(|&b| b == b',')
                .filter(|item| !item.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    let want_fnv = var("RESULT_BINARY_FNV").as_deref() == Some("1");
    if let (true, Some(fnv)) = (want_fnv, binary_fnv) {
        items.push(fnv.as_bytes().to_vec());
    }
    if results.is_none() && items.is_empty() {
        return;
    }
    let sent = (|| -> io::Result<usize> {
        let socket = UnixDatagram::unbound()?;
        for (i, item) in items.iter().enumerate() {
            socket
                .send_to(item, RESULTS_SOCKET)
                .map_err(|e| io::Error::new(e.kind(), format!("item {i}: {e}")))?;
        }
        Ok(items.len())
    })();
    match sent {
        Ok(n) => out.line(&format!("RESULTS_SENT={n}")),
        Err(e) => out.line(&format!("RESULTS_ERROR={e}")),
    }
}

fn spam(out: &mut Out, lines: u64) {
    for i in 0..lines {
        out.line(&format!("line {i} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        if i % 4096 == 0 {
            out.check_terminated();
        }
    }
}

fn alloc(out: &mut Out, mib: usize) {
    out.flush(); // an OOM kill must not lose what was printed so far
    let len = mib.saturating_mul(1 << 20);
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(len).is_err() {
        out.line(&format!("ALLOC_ERROR=cannot reserve {mib} MiB"));
        return;
    }
    block.resize(len, 0);
    for (i, page) in block.chunks_mut(4096).enumerate() {
        page[0] = 1; // resize may map lazy zero pages: write each one
        if i % 4096 == 0 {
            out.check_terminated();
        }
    }
    std::hint::black_box(&block);
    out.line(&format!("ALLOCATED={mib}"));
}

fn sleep(out: &mut Out, millis: u64) {
    out.line(&format!("SLEEP_START={}", unix_millis()));
    out.flush();
    let deadline = Instant::now() + Duration::from_millis(millis);
    loop {
        out.check_terminated();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
    out.line(&format!("SLEEP_END={}", unix_millis()));
}

fn main() {
    install_handlers();
    let mut out = Out(BufWriter::with_capacity(64 * 1024, io::stdout()));

    print_env(&mut out);
    let binary_fnv = read_binary(&mut out);
    send_results(&mut out, binary_fnv.as_deref());
    if let Some(lines) = number::<u64>(&mut out, "SPAM_LINES") {
        spam(&mut out, lines);
    }
    if var("NONUTF8").as_deref() == Some("1") {
        out.bytes(b"\xff\xfe bad utf8 \xc3\x28\n");
    }
    if let Some(mib) = number::<usize>(&mut out, "ALLOC_MB") {
        alloc(&mut out, mib);
    }
    if let Some(millis) = number::<u64>(&mut out, "SLEEP_MS") {
        sleep(&mut out, millis);
    }
    out.flush();
    if let Some(text) = std::env::var_os("STDERR") {
        let mut err = io::stderr().lock();
        let _ = err.write_all(OsStr::new(&text).as_bytes());
        let _ = err.write_all(b"\n");
        let _ = err.flush();
    }
    let code = number::<i32>(&mut out, "EXIT_CODE").unwrap_or(0);
    out.check_terminated();
    out.flush();
    process::exit(code);
}
