"""``seqpred serve``: a trained run behind HTTP, on one continuous-batching engine.

:mod:`~seqpred.serve.engine` batches concurrent requests into one model step per token and knows
nothing of HTTP; :mod:`~seqpred.serve.app` holds the playground and seqpred's own routes,
:mod:`~seqpred.serve.openai_api` OpenAI's. Needs the ``serve`` extra (Starlette and uvicorn).
"""
