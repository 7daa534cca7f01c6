//! Errors of the container runtime: the few causes a caller branches on (daemon down, image or
//! container missing, anything else), and the translation from bollard's errors into them.
//! Nothing outside this crate sees a bollard error.

use bollard::errors::Error as DockerError;

/// What went wrong talking to the container engine.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The daemon could not be reached (socket missing, connection refused, request timed out).
    /// Retryable: the same call may succeed once Docker is back.
    #[error("the Docker daemon at {endpoint} is unreachable ({cause}); check that Docker is running and that [docker] dd points at it, then retry")]
    Unavailable { endpoint: String, cause: String },
    /// The image is not present on this host (this deployment cannot pull from a registry).
    #[error("image {image} is not present on this Docker host; build it locally (images/build.sh for the test images) or load it with `docker load`, then retry")]
    ImageNotFound { image: String },
    /// The container does not exist (never created, or already removed).
    #[error(
        "container {id} does not exist on this Docker host (it may already have been removed)"
    )]
    NotFound { id: String },
    /// Docker answered but refused or failed the operation; `cause` says why. Not retryable as is.
    #[error("Docker could not {op}: {cause}")]
    Failed { op: String, cause: String },
}

impl RuntimeError {
    /// True when retrying the same call later may succeed (the daemon was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// What the call was about, so a 404 becomes the right variant and messages name the object.
pub(crate) enum Subject<'a> {
    Daemon,
    Image(&'a str),
    Container(&'a str),
}

/// Translates a bollard error from operation `op` (an infinitive: "start container abc") on
/// `subject`, against the daemon at `endpoint`.
pub(crate) fn classify(
    endpoint: &str,
    op: String,
    subject: Subject<'_>,
    err: DockerError,
) -> RuntimeError {
    if is_connection_error(&err) {
        return RuntimeError::Unavailable {
            endpoint: endpoint.to_string(),
            cause: err.to_string(),
        };
    }
    if status_code(&err) == Some(404) {
        match subject {
            Subject::Image(image) => {
                return RuntimeError::ImageNotFound {
                    image: image.to_string(),
                }
            }
            Subject::Container(id) => return RuntimeError::NotFound { id: id.to_string() },
            Subject::Daemon => {}
        }
    }
    RuntimeError::Failed {
        op,
        cause: describe(&err),
    }
}

/// The HTTP status of a Docker answer, if the daemon answered at all.
pub(crate) fn status_code(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Errors that mean "no answer from the daemon" rather than "the daemon said no".
fn is_connection_error(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::SocketNotFoundError(_)
            | DockerError::HyperLegacyError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::IOError { .. }
            | DockerError::RequestTimeoutError
    )
}

/// Docker's own message when it gave one, otherwise bollard's description.
fn describe(err: &DockerError) -> String {
    match err {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
