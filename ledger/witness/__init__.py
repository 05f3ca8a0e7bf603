"""A C2SP transparency-log witness (c2sp.org/tlog-witness): it follows logs by their signed
checkpoints, checks that each new one is consistent with the last it cosigned, and cosigns it
(c2sp.org/tlog-cosignature, Ed25519 v1). A witness is its own service, separate from the log.

protocol: the request and response formats; state: what it remembers per log (SQLite);
server: the rules and the HTTP service; client: what a log calls.
"""
