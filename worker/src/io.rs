//! The per-execution side channels of an actor container (spec §5.3, §5.4): the results socket
//! `/_abaco_results.sock` (a Unix datagram socket the worker binds; each datagram becomes one
//! result on `results_{dbid}_{eid}`) and, for binary messages, `/_abaco_binary_data`.
//!
//! Unlike Abaco, the binary message is a regular file, not a FIFO: the container reads it at its
//! own pace, readers that stop at EOF/EAGAIN (agavepy) get the whole message, and a message of any
//! size (hundreds of MB) cannot deadlock the worker on a full pipe.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::net::UnixDatagram;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use abaco_core::messages::MessageBody;
use abaco_core::{DbId, ExecutionId, MailboxMessage, Queue, Worker};

use crate::WorkerContext;

/// The largest datagram read from the results socket (Abaco's limit).
const MAX_RESULT: usize = 131_072;

pub struct ExecutionIo {
    socket_path: PathBuf,
    socket: Option<UnixDatagram>,
    binary_path: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
}

impl ExecutionIo {
    /// Binds the results socket and writes the binary message, if any, under this worker's dirs.
    pub async fn prepare(
        ctx: &WorkerContext,
        worker: &Worker,
        message: &MailboxMessage,
    ) -> std::io::Result<ExecutionIo> {
        let eid = &message.execution_id;
        let socket_dir = ctx.config.socket_dir().join(worker.id.as_str());
        tokio::fs::create_dir_all(&socket_dir).await?;
        let socket_path = std::path::absolute(socket_dir.join(format!("{eid}.sock")))?;
        let _ = tokio::fs::remove_file(&socket_path).await;
        let socket = UnixDatagram::bind(&socket_path)?;
        // The container may run as any user.
        tokio::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o777)).await?;
        let binary_path = match &message.message {
            MessageBody::Binary(bytes) => {
                let dir = ctx.config.fifo_dir().join(worker.id.as_str());
                tokio::fs::create_dir_all(&dir).await?;
                let path = std::path::absolute(dir.join(eid.as_str()))?;
                tokio::fs::write(&path, bytes).await?;
                tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).await?;
                Some(path)
            }
            _ => None,
        };
        Ok(ExecutionIo {
            socket_path,
            socket: Some(socket),
            binary_path,
            stop: None,
        })
    }

    /// Bind mounts for the container.
    pub fn binds(&self) -> Vec<String> {
        let mut binds = vec![format!(
            "{}:/_abaco_results.sock",
            self.socket_path.display()
        )];
        if let Some(path) = &self.binary_path {
            binds.push(format!("{}:/_abaco_binary_data:ro", path.display()));
        }
        binds
    }

    /// Starts forwarding datagrams to the execution's results queue until `finish`.
    pub fn forward_results(
        &mut self,
        ctx: &WorkerContext,
        db_id: &DbId,
        eid: &ExecutionId,
    ) -> JoinHandle<()> {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        self.stop = Some(stop_tx);
        let socket = self.socket.take();
        let channels = ctx.control.channels.clone();
        let queue = Queue::Results(db_id.clone(), eid.clone());
        tokio::spawn(async move {
            let Some(socket) = socket else { return };
            let mut buf = vec![0u8; MAX_RESULT];
            let mut stopping = false;
            loop {
                let received = if stopping {
                    // Drain what the container sent before it exited (already queued in the
                    // socket), without waiting for more: nobody is left to send it.
                    match socket.try_recv(&mut buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                        Err(e) => Err(e),
                    }
                } else {
                    tokio::select! {
                        r = socket.recv(&mut buf) => r,
                        _ = &mut stop_rx => { stopping = true; continue; }
                    }
                };
                match received {
                    Ok(n) => {
                        if let Err(err) = channels.publish_bytes(&queue, buf[..n].to_vec()).await {
                            tracing::warn!(queue = %queue.name(), cause = %err, "could not store an execution result");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "results socket failed");
                        return;
                    }
                }
            }
        })
    }

    /// Drains the socket, waits for the forwarder, and removes the files.
    pub async fn finish(mut self, forwarder: JoinHandle<()>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = forwarder.await;
        self.cleanup();
    }

    fn cleanup(&mut self) {
        let _ = std::fs::remove_file(&self.socket_path);
        if let Some(path) = self.binary_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for ExecutionIo {
    fn drop(&mut self) {
        self.cleanup();
    }
}
