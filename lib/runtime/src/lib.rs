//! Container runtime over the Docker Engine API. Only this crate knows Docker.
