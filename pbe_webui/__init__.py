"""The AUTOMATIC1111 webui / Forge adapter behind scripts/paint_by_example.py.

Each module holds one concern: `models` (listing and loading Paint by Example weights),
`devices` (where the edit runs and the GPU memory it needs), `inputs` (the tab's and the
script's values as `edit` options), `infotext` (what the edit used, for PNG Info), `job` (the
edit run as a webui job) and `ui` (the script's panel). They import the webui's `modules`, so
they load only inside a webui; `pbe_core` under them imports no host.
"""
