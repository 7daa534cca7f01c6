//! clientg (spec §7.4): gives each worker of an actor whose `token` attribute is on an OAuth
//! client of the platform's own authorization server, hands it fresh access tokens, and deletes
//! the client when the worker goes. Requests arrive on the `clients` queue; answers go to the
//! asking worker's `clients_reply_{worker_id}` queue. Tokens act as the actor's owner.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use abaco_control::tokens;
use abaco_control::Control;
use abaco_core::messages::{ClientReply, ClientRequest};
use abaco_core::{Config, Queue};
use abaco_identity::TokenIssuer;

#[derive(Clone)]
pub struct ClientgContext {
    pub config: Arc<Config>,
    pub control: Control,
}

/// Serves the `clients` queue until `shutdown`.
pub async fn run(
    ctx: ClientgContext,
    shutdown: CancellationToken,
) -> Result<(), tokens::TokenError> {
    let issuer = tokens::signing_key(&ctx.control.store).await?;
    loop {
        let mut consumer = match ctx.control.channels.consume(&Queue::Clients).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot consume the clients queue; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                d = consumer.next() => d,
            };
            let Ok(Some(delivery)) = delivery else { break };
            match delivery.decode::<ClientRequest>() {
                Ok(request) => handle(&ctx, &issuer, request).await,
                Err(err) => tracing::error!(cause = %err, "dropping undecodable clients request"),
            }
            let _ = delivery.ack().await;
        }
    }
}

async fn handle(ctx: &ClientgContext, issuer: &TokenIssuer, request: ClientRequest) {
    let store = &ctx.control.store;
    let ttl = ctx.config.web.token_ttl;
    let (reply_to, reply) = match request {
        ClientRequest::New {
            tenant,
            actor_id,
            worker_id,
            reply_to,
        } => {
            let reply = match store.actor(&actor_id).await {
                Ok(Some(actor)) => {
                    match tokens::create_client(
                        store,
                        worker_id.as_str(),
                        &tenant,
                        &actor.owner,
                        Some((&actor_id, &worker_id)),
                    )
                    .await
                    {
                        Ok((client, secret)) => match tokens::access_token(issuer, &client, ttl) {
                            Ok(token) => {
                                tracing::info!(actor_id = %actor_id, worker_id = %worker_id, "OAuth client created");
                                ok(client.client_id, secret, token)
                            }
                            Err(e) => error(format!("cannot issue a token: {e}")),
                        },
                        Err(e) => error(format!("cannot create the client: {e}")),
                    }
                }
                Ok(None) => error(format!("Unable to look up actor with id: {actor_id}")),
                Err(e) => error(format!("store unavailable: {e}")),
            };
            (reply_to, reply)
        }
        ClientRequest::Token {
            client_id,
            client_secret,
            reply_to,
        } => {
            let reply = match tokens::authenticate(store, &client_id, &client_secret).await {
                Ok(Some(client)) => match tokens::access_token(issuer, &client, ttl) {
                    Ok(token) => ok(client.client_id, String::new(), token),
                    Err(e) => error(format!("cannot issue a token: {e}")),
                },
                Ok(None) => error("invalid client credentials".into()),
                Err(e) => error(format!("store unavailable: {e}")),
            };
            (reply_to, reply)
        }
        ClientRequest::Delete { client_id } => {
            match tokens::delete_client(store, &client_id).await {
                Ok(_) => tracing::info!(client_id = %client_id, "OAuth client deleted"),
                Err(e) => {
                    tracing::warn!(client_id = %client_id, cause = %e, "cannot delete OAuth client")
                }
            }
            return;
        }
    };
    if let Err(err) = ctx
        .control
        .channels
        .publish(&Queue::ClientReply(reply_to.clone()), &reply)
        .await
    {
        tracing::warn!(worker_id = %reply_to, cause = %err, "cannot answer a clients request");
    }
}

fn ok(client_id: String, client_secret: String, access_token: String) -> ClientReply {
    ClientReply {
        ok: true,
        message: String::new(),
        client_id,
        client_secret,
        access_token,
    }
}

fn error(message: String) -> ClientReply {
    ClientReply {
        ok: false,
        message,
        client_id: String::new(),
        client_secret: String::new(),
        access_token: String::new(),
    }
}
