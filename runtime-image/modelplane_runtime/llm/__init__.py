"""Large language models: the OpenAI subset, llama.cpp bindings, the continuous-batching scheduler."""
