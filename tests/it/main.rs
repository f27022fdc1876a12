//! Integration tests: one binary, one module per area. They run the real binary or library
//! against real files, read the lake back with DuckDB (an independent reader, through its Python
//! package) and use real servers on loopback: S3 (moto), SMTP (aiosmtpd, STARTTLS and AUTH), a
//! webhook receiver that checks DingTalk signatures; a Ballista cluster of this binary's own
//! scheduler and executors; and headless Chromium for the report page.

mod alert;
mod carry;
mod cluster;
mod commit;
mod common;
mod config;
mod correlation;
mod demo;
mod examples;
mod faults;
mod functions;
mod ingest;
mod inputs;
mod metrics;
mod query;
mod readers;
mod report;
mod s3;
mod schedule;
