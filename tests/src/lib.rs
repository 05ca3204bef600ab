//! Helpers for the end-to-end tests: the local Kubernetes test cluster, and gateways started from
//! the real `sandgate` binary.

pub mod api;
pub mod cluster;
pub mod figures;
pub mod gateway;
pub mod kube_gateway;
pub mod processes;
pub mod scenarios;
pub mod target;
pub mod tcp_proxy;
