//! Generated code for the `sandgate.v1` protobuf package, with its gRPC client and server.

#![allow(missing_docs, clippy::all)]

/// Messages and services of `proto/sandgate/v1/sandgate.proto`.
pub mod v1 {
    tonic::include_proto!("sandgate.v1");
}

/// `google.rpc.Status`, the message that gRPC carries in `grpc-status-details-bin`.
pub mod rpc {
    /// The rich error model of gRPC: a code, a message and typed details.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The gRPC status code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// The error message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Typed details, such as a `sandgate.v1.DeletionStatus`.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<prost_types::Any>,
    }
}

/// Type URL of [`v1::DeletionStatus`] in status details.
pub const DELETION_STATUS_TYPE_URL: &str = "type.googleapis.com/sandgate.v1.DeletionStatus";

/// Builds a DEADLINE_EXCEEDED status whose details carry `deletion`.
pub fn deletion_timeout_status(message: String, deletion: &v1::DeletionStatus) -> tonic::Status {
    use prost::Message;

    let details = rpc::Status {
        code: tonic::Code::DeadlineExceeded as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: DELETION_STATUS_TYPE_URL.to_string(),
            value: deletion.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::DeadlineExceeded,
        message,
        details.encode_to_vec().into(),
    )
}

/// Reads the [`v1::DeletionStatus`] from a status's details, if it carries one.
pub fn deletion_status(status: &tonic::Status) -> Option<v1::DeletionStatus> {
    use prost::Message;

    let details = rpc::Status::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == DELETION_STATUS_TYPE_URL)
        .and_then(|any| v1::DeletionStatus::decode(any.value.as_slice()).ok())
}
