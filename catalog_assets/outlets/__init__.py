"""The retail outlet hub: one pull API for every 1C:Retail outlet, fed from the staged catalog.

Why a hub: a connector per outlet per entity does not scale to 200+ outlets. One sync fills the
shared storage (DuckDB); each materialization publishes an immutable feed snapshot; a single
API serves every outlet from it, keeping each outlet's acknowledged cursor in a small SQLite
file; a sensor turns that file into one partition, one materialization and one check per
outlet on the asset graph.

Modules: `registry` (outlets.yaml), `feeds` (pure: feeds, cursors, subtrees, lag), `snapshot`
(publish and read snapshots), `state` (SQLite: acknowledgements and contacts), `health`
(pure assessment + gathering), `resource` (the Dagster resource with the paths).
"""
