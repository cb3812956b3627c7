//! Portico: a read-only FHIR R4 facade over legacy practice-management databases.
//!
//! Modules in reading order: the pure core (`dialect`, `search`, `adapter`, `fhir`), then the
//! edges (`db`, `repository`, `auth`, `api`, `app`), then the tools (`cli`, `check`,
//! `dictionary`, `demo`, `config`).

pub mod access;
pub mod adapter;
pub mod alarm;
pub mod api;
pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod dialect;
pub mod dictionary;
pub mod error;
pub mod export;
pub mod fhir;
pub mod groups;
pub mod halves;
pub mod metrics;
pub mod quality;
pub mod reconcile;
pub mod repository;
pub mod search;
pub mod state;
pub mod status;
pub mod subscriptions;
