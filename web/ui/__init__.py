"""The operator UI under `/dashboard/`: Jinja2 templates, one stylesheet, one small
script, the SVG charts and the data each page shows (routes: `web/dashboard.py`)."""
