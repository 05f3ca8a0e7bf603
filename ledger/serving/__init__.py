"""Serving the ledger: the thin gRPC layer over ledger.service (`grpc_server`), the one
place domain errors become status codes (`grpc_status`), Tail's wait for new entries
(`tailing`), the feed that asks witnesses to cosign (`witness_feed`), and a server
process's start and stop (`runtime`). No rule of the ledger is decided here."""
