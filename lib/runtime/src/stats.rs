//! Reduction of Docker's stats document to the three counters Abaco records per execution.
//! Works for cgroup v1 and v2 hosts; missing sections (an exited container) count as zero.

use bollard::models::ContainerStatsResponse;

use crate::Stats;

/// CPU time, block + network I/O and memory from one stats sample.
pub(crate) fn from_docker(sample: &ContainerStatsResponse) -> Stats {
    let cpu_ns = sample
        .cpu_stats
        .as_ref()
        .and_then(|cpu| cpu.cpu_usage.as_ref())
        .and_then(|usage| usage.total_usage)
        .unwrap_or(0);
    let block_bytes: u64 = sample
        .blkio_stats
        .as_ref()
        .and_then(|blkio| blkio.io_service_bytes_recursive.as_ref())
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| {
                    entry.op.as_deref().is_some_and(|op| {
                        op.eq_ignore_ascii_case("read") || op.eq_ignore_ascii_case("write")
                    })
                })
                .filter_map(|entry| entry.value)
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    let network_bytes: u64 = sample
        .networks
        .as_ref()
        .map(|networks| {
            networks
                .values()
                .map(|net| {
                    net.rx_bytes
                        .unwrap_or(0)
                        .saturating_add(net.tx_bytes.unwrap_or(0))
                })
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    let memory_bytes = sample
        .memory_stats
        .as_ref()
        .and_then(|memory| memory.usage)
        .unwrap_or(0);
    Stats {
        cpu_ns: to_i64(cpu_ns),
        io_bytes: to_i64(block_bytes.saturating_add(network_bytes)),
        memory_bytes: to_i64(memory_bytes),
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
