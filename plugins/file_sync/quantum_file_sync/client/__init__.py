"""``realtime-sync-client``: two-way, real-time sync of a local folder with a file_sync server.

Module map: :mod:`cli` (command line) → :mod:`sync` (RealtimeSyncClient, orchestration) →
:mod:`settle` (one path: probe, decide, act) over :mod:`merge` (pure decisions), :mod:`state`
(the merge base), :mod:`local` (the folder), :mod:`remote` (HTTP API), :mod:`remote_view` (what
the server holds), :mod:`prefetch` (a full pass's small downloads, in bundles), :mod:`ws_client`
(``/ws``), :mod:`scheduler` (per-path work queue), :mod:`guard`, :mod:`conflicts`, :mod:`ignore`,
:mod:`moves`, :mod:`progress`, :mod:`logs`, :mod:`urls`, :mod:`exit_codes`.
"""
