"""The AUTOMATIC1111 webui / Forge adapter behind scripts/paint_by_example.py.

Each module holds one concern: `models` (listing Paint by Example models and LoRAs by their
header, loading them), `devices` (where the edit runs and the GPU memory it needs), `arguments`
(the script's arguments: order, defaults, checks), `inputs` (the tab's values as `edit`
options), `infotext` (what the edit used, for PNG Info), `preview` (progress and live preview),
`job` (the edit run as a webui job) and `ui` (the script's panel). They import the webui's
`modules`, so they load only inside a webui; `pbe_core` under them imports no host.
"""
