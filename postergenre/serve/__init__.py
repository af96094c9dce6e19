"""The web service: ``postergenre serve RUN`` answers genre predictions and Grad-CAM heatmaps over HTTP.

:func:`postergenre.serve.app.create_app` builds the FastAPI application of a run folder; the
page at ``/`` (``static/``) is a small offline front end for it. FastAPI and uvicorn are an
optional extra (``pip install 'postergenre[serve]'``), so this package file imports nothing.
"""
