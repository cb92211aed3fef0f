//! End-to-end tests of the HTTP contract (`API.md`): every test starts its own server on
//! 127.0.0.1 with a `ManualClock` and talks to it over plain HTTP.

mod authorization;
mod backup;
mod bad_input;
mod catalog;
mod contention;
mod edges;
mod expiry;
mod files;
mod fuzz;
mod happy_path;
mod headers;
mod helpers;
mod hoarding;
mod lists;
mod live;
mod money;
mod openapi;
mod queue;
mod returns;
mod rooms;
mod venues;
mod waitlist;
