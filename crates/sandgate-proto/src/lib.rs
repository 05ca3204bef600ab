//! Generated code for the `sandgate.v1` protobuf package, with its gRPC client and server.

#![allow(missing_docs, clippy::all)]

/// Messages and services of `proto/sandgate/v1/sandgate.proto`.
pub mod v1 {
    tonic::include_proto!("sandgate.v1");
}
