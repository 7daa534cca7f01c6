//! Operations that combine the store and the channels and are needed by more than one component:
//! requesting a worker (record + spawner command), stopping workers, enqueueing a message for an
//! actor. Components call these instead of each other; nothing here knows HTTP or Docker.

pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abaco_channels::{ChannelError, Channels};
use abaco_core::messages::{ClientReply, ClientRequest};
use abaco_core::time::now;
use abaco_core::{
    Actor, DbId, Execution, MailboxMessage, Queue, SpawnerCommand, Worker, WorkerControl, WorkerId,
    WorkerStatus,
};
use abaco_store::{Store, StoreError};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

pub type Result<T> = std::result::Result<T, ControlError>;

/// Resolves an actor id or alias of `tenant` to an existing actor's db_id.
pub async fn resolve_actor(
    store: &Store,
    tenant: &abaco_core::Tenant,
    identifier: &str,
) -> Option<DbId> {
    let db_id = if abaco_core::ids::is_hashid(identifier) {
        DbId::new(tenant, &abaco_core::ActorId::from(identifier))
    } else {
        let alias = store
            .raw()
            .get(
                abaco_store::Kind::Aliases,
                &format!("{tenant}_{identifier}"),
            )
            .await
            .ok()??;
        let actor_id = alias.get("actor_id")?.as_str()?.to_string();
        DbId::new(tenant, &abaco_core::ActorId::from(actor_id))
    };
    store.actor(&db_id).await.ok()?.map(|_| db_id)
}

/// Why a worker is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// One more worker beside the existing ones (scale-up, `POST .../workers`).
    Additional,
    /// A worker of a new revision that replaces every existing one once it is READY;
    /// `repull` asks the spawner to pull the image again (`force` on update).
    Replacing { repull: bool },
}

/// How long this process trusts that an actor it saw with a viable worker still has one. Within
/// this window `ensure_one_worker` skips its store write (one per message otherwise); a worker that
/// vanished inside it is replaced by the health agent, which requests workers for actors with
/// queued messages.
const VIABLE_FOR: Duration = Duration::from_millis(500);

/// The store and channels together: what every component holds.
#[derive(Clone)]
pub struct Control {
    pub store: Store,
    pub channels: Channels,
    /// Actors this process recently saw with a worker that is starting or serving.
    viable: Arc<Mutex<HashMap<DbId, Instant>>>,
}

impl Control {
    pub fn new(store: Store, channels: Channels) -> Control {
        Control {
            store,
            channels,
            viable: Arc::default(),
        }
    }

    fn recently_viable(&self, db_id: &DbId) -> bool {
        let viable = self.viable.lock().unwrap_or_else(|e| e.into_inner());
        viable
            .get(db_id)
            .is_some_and(|seen| seen.elapsed() < VIABLE_FOR)
    }

    fn mark_viable(&self, db_id: &DbId) {
        let mut viable = self.viable.lock().unwrap_or_else(|e| e.into_inner());
        if viable.len() >= 10_000 {
            viable.retain(|_, seen| seen.elapsed() < VIABLE_FOR);
        }
        viable.insert(db_id.clone(), Instant::now());
    }

    fn forget_viable(&self, db_id: &DbId) {
        let mut viable = self.viable.lock().unwrap_or_else(|e| e.into_inner());
        viable.remove(db_id);
    }

    /// Records a `REQUESTED` worker and asks the spawners of the actor's queue to start it.
    pub async fn request_worker(&self, actor: &Actor, start: Start) -> Result<WorkerId> {
        let worker = Worker::requested(actor, WorkerId::generate(), now());
        self.store.put_worker(&worker).await?;
        self.send_spawner_command(actor, &worker, start).await?;
        Ok(worker.id)
    }

    /// Requests a worker unless the actor already has one that is starting or serving. The check
    /// and the insert are one atomic store operation, so concurrent messages to an idle actor
    /// request exactly one worker (and a stateful actor never gets two).
    /// Skips the store entirely when this process saw a viable worker of the actor within
    /// `VIABLE_FOR`.
    pub async fn ensure_one_worker(&self, actor: &Actor) -> Result<Option<WorkerId>> {
        let db_id = actor.db_id();
        if self.recently_viable(&db_id) {
            return Ok(None);
        }
        let worker = Worker::requested(actor, WorkerId::generate(), now());
        if !self.store.insert_worker_unless_viable(&worker).await? {
            self.mark_viable(&db_id);
            return Ok(None);
        }
        self.send_spawner_command(actor, &worker, Start::Additional)
            .await?;
        self.mark_viable(&db_id);
        Ok(Some(worker.id))
    }

    async fn send_spawner_command(
        &self,
        actor: &Actor,
        worker: &Worker,
        start: Start,
    ) -> Result<()> {
        let command = SpawnerCommand {
            actor_id: actor.db_id(),
            worker_id: worker.id.clone(),
            image: actor.image.clone(),
            revision: actor.revision,
            tenant: actor.tenant.clone(),
            stop_existing: matches!(start, Start::Replacing { .. }),
            repull: matches!(start, Start::Replacing { repull: true }),
        };
        if let Err(err) = self
            .channels
            .publish(&Queue::Command(actor.queue.clone()), &command)
            .await
        {
            // Without its command the record would sit in REQUESTED until health removed it.
            let _ = self.store.delete_worker(&worker.actor_id, &worker.id).await;
            return Err(err.into());
        }
        tracing::info!(actor_id = %actor.db_id(), worker_id = %worker.id, "worker requested");
        Ok(())
    }

    /// Asks one worker to finish its in-flight execution and stop.
    pub async fn stop_worker(&self, db_id: &DbId, worker_id: &WorkerId, why: &str) -> Result<()> {
        self.forget_viable(db_id);
        let mut extra = Map::new();
        extra.insert("status_message".into(), Value::String(why.into()));
        self.store
            .transition_worker(db_id, worker_id, WorkerStatus::ShutdownRequested, extra)
            .await?;
        self.channels
            .publish(
                &Queue::WorkerControl(worker_id.clone()),
                &WorkerControl::Stop,
            )
            .await?;
        tracing::info!(actor_id = %db_id, worker_id = %worker_id, reason = why, "worker stop requested");
        Ok(())
    }

    /// Stops every worker of an actor except those in `keep`.
    pub async fn stop_workers(&self, db_id: &DbId, keep: &[WorkerId], why: &str) -> Result<usize> {
        let mut stopped = 0;
        for worker in self.store.workers_of(db_id).await? {
            if keep.contains(&worker.id) {
                continue;
            }
            self.stop_worker(db_id, &worker.id, why).await?;
            stopped += 1;
        }
        Ok(stopped)
    }

    /// Asks clientg for an OAuth client for a new worker; waits up to `wait` for the answer.
    pub async fn request_client(
        &self,
        actor: &Actor,
        worker_id: &WorkerId,
        wait: std::time::Duration,
    ) -> Result<ClientReply> {
        let request = ClientRequest::New {
            tenant: actor.tenant.clone(),
            actor_id: actor.db_id(),
            worker_id: worker_id.clone(),
            reply_to: worker_id.clone(),
        };
        self.ask_clientg(&request, worker_id, wait).await
    }

    /// A fresh access token for a worker's client.
    pub async fn fresh_token(
        &self,
        client_id: &str,
        client_secret: &str,
        worker_id: &WorkerId,
        wait: std::time::Duration,
    ) -> Result<ClientReply> {
        let request = ClientRequest::Token {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            reply_to: worker_id.clone(),
        };
        self.ask_clientg(&request, worker_id, wait).await
    }

    /// Tells clientg a worker's client is no longer needed.
    pub async fn delete_client(&self, client_id: &str) -> Result<()> {
        let request = ClientRequest::Delete {
            client_id: client_id.to_string(),
        };
        self.channels.publish(&Queue::Clients, &request).await?;
        Ok(())
    }

    async fn ask_clientg(
        &self,
        request: &ClientRequest,
        worker_id: &WorkerId,
        wait: std::time::Duration,
    ) -> Result<ClientReply> {
        let replies = Queue::ClientReply(worker_id.clone());
        self.channels.publish(&Queue::Clients, request).await?;
        let timeout = || ClientReply {
            ok: false,
            message: format!(
                "clientg did not answer within {} s; is it running?",
                wait.as_secs()
            ),
            client_id: String::new(),
            client_secret: String::new(),
            access_token: String::new(),
        };
        match self.channels.get(&replies, wait).await? {
            Some(delivery) => {
                let reply = delivery.decode::<ClientReply>();
                let _ = delivery.ack().await;
                Ok(reply.unwrap_or_else(|_| timeout()))
            }
            None => Ok(timeout()),
        }
    }

    /// Publishes an actor or execution event when the actor has a link or a webhook (spec §7.7).
    /// Failures are logged: an event never fails the operation that caused it.
    pub async fn publish_event(
        &self,
        actor: &Actor,
        event_type: abaco_core::messages::EventType,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        if actor.link.is_empty() && actor.webhook.is_empty() {
            return;
        }
        let link = self.resolve_link(actor).await.unwrap_or_default();
        let payload = abaco_core::messages::event_payload(event_type, actor, &link, extra);
        if let Err(err) = self.channels.publish(&Queue::Events, &payload).await {
            tracing::warn!(actor_id = %actor.db_id(), cause = %err, "could not publish an event");
        }
    }

    /// The db_id of the actor `actor.link` names (an actor id or an alias of its tenant).
    pub async fn resolve_link(&self, actor: &Actor) -> Option<String> {
        if actor.link.is_empty() {
            return None;
        }
        resolve_actor(&self.store, &actor.tenant, &actor.link)
            .await
            .map(|d| d.0)
    }

    /// Records a `SUBMITTED` execution and puts its message in the actor's mailbox. When this
    /// returns `Ok`, the message is durable.
    pub async fn enqueue(&self, execution: &Execution, message: &MailboxMessage) -> Result<()> {
        self.store.put_execution(execution).await?;
        if let Err(err) = self
            .channels
            .publish_bytes(
                &Queue::Mailbox(execution.actor_id.clone()),
                message.encode(),
            )
            .await
        {
            // The message was not accepted: no execution may be left waiting for it.
            let mut patch = serde_json::Map::new();
            patch.insert(
                "status".into(),
                serde_json::json!(abaco_core::ExecutionStatus::Error),
            );
            patch.insert(
                "status_message".into(),
                serde_json::json!(format!("The message could not be queued: {err}")),
            );
            let _ = self
                .store
                .update_execution(&execution.actor_id, &execution.id, patch)
                .await;
            return Err(err.into());
        }
        Ok(())
    }
}
