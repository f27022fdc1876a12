//! Integration tests: one binary, one module per area. They run the real binary or library
//! against real files, read the lake back with DuckDB (an independent reader, through its Python
//! package) and use a real S3-compatible server on loopback (moto).

mod common;
mod config;
mod demo;
mod functions;
mod ingest;
mod metrics;
mod query;
mod s3;
