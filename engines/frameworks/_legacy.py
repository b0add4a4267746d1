"""TO BE REMOVED when the engines implement the Engine interface of issue 13 (LOOP's part).

The engines of before take no configuration when they are made, build with `seed=` and
`same_init=`, and apply the run's settings for inference in `prepare_inference`. This
adapter gives one of them the interface the scenario calls (ISSUE13.md section 7), so
that the runs work while the engines are rewritten. `get_engine` uses it only for an
engine class without `inference_fn`; delete this file and that branch once none is left.
"""
from __future__ import annotations


class LegacyEngine:
    def __init__(self, engine, config):
        self._engine = engine
        self.config = config
        self.name = engine.name
        self.weights_suffix = engine.weights_suffix

    @property
    def model(self):
        """The built model (the benchmarks' hand-written loops reach for it)."""
        return self._engine.model

    def build(self, architecture, resolution, channels, num_classes, weights=None):
        return self._engine.build(architecture, resolution, channels, num_classes, weights,
                                  seed=self.config.seed, same_init=self.config.same_init)

    def parameters(self) -> int:
        return self._engine.parameters()

    def versions(self) -> dict:
        return self._engine.versions()

    def device(self) -> str:
        return self._engine.device()

    def train(self, dataset, on_event) -> dict:
        return self._engine.train(dataset, self.config, on_event)

    def evaluate(self, dataset, batch_size: int = 256) -> dict:
        return self._engine.evaluate(dataset, batch_size)

    def save(self, path: str) -> str:
        return self._engine.save(path)

    def load(self, path: str) -> None:
        self._engine.load(path)
        self._engine.prepare_inference(self.config)  # loaded weights run with the run's settings

    def inference_fn(self):
        self._engine.prepare_inference(self.config)
        return self._engine._inference_fn()

    def inference_inputs(self, batch_size: int, images=None) -> list:
        return self._engine.inference_inputs(batch_size, images)

    def sync(self, outputs) -> None:
        self._engine.sync(outputs)

    def predict_proba(self, x, batch_size: int = 256):
        """Not part of the interface; the engine tests of before compare predictions."""
        return self._engine.predict_proba(x, batch_size)
