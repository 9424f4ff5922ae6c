"""`Decision`: the zero-shot classifier as CLIP users build it, and why it picks its class.

Class k is embedded by its templates (``"a photo of a {}."``, ...): the class embedding is the normalised
mean of the normalised template embeddings (`dualex.decisions.ensemble.class_embedding`); the score of a
class is the model's score of the image and that embedding, λ cos + β. The decision is explained as a
`Contrast` of the predicted class against the runner-up (or a class the user names); each class's
explanation is the prompt ensemble's (`dualex.decisions.ensemble`), with rows for the tokens of every
template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dualex.decisions.contrast import Contrast
from dualex.decisions.ensemble import class_embedding, ensemble_explanation, ensemble_weight
from dualex.errors import InputError
from dualex.explanation import Explanation

DEFAULT_TEMPLATES = ("{}",)


def prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The class-major list of prompts: template j of class k at ``k * J + j`` (``{}`` -> the class name)."""
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise InputError(f"each template must be a string with a '{{}}' for the class name, got {t!r}")
    return [t.replace("{}", c) for c in classes for t in templates]


@dataclass
class Decision:
    """A zero-shot classification of one image and its explanation.

    Attributes:
        classes: The C class names.
        templates: The J templates.
        scores: ``(C,)`` the classifier's scores, λ cos(x, c_k) + β (the model's score units).
        cosines: ``(C,)`` cos(x, c_k).
        weights: ``(C,)`` the ensemble weight ω_k = 1 / ‖Σ_j ê_kj‖ of each class.
        contrast: `Contrast` of `predicted` (``.a``) against `versus` (``.b``), each the prompt ensemble's
            explanation (`dualex.decisions.ensemble.ensemble_explanation`).
        versus: The class the prediction is contrasted with (the runner-up unless named).
    """

    classes: list[str]
    templates: list[str]
    scores: Tensor
    cosines: Tensor
    weights: Tensor
    contrast: Contrast
    versus: str
    explanations: dict[str, Explanation] = field(default_factory=dict)

    @property
    def ranking(self) -> list[int]:
        """Class indices by score, best first (ties: the earlier class first)."""
        return [int(i) for i in torch.sort(self.scores, descending=True, stable=True).indices]

    @property
    def predicted(self) -> str:
        """The predicted class (highest score)."""
        return self.classes[self.ranking[0]]

    @property
    def runner_up(self) -> str:
        """The second-ranked class (the predicted one when there is only one class)."""
        return self.classes[self.ranking[1]] if len(self.classes) > 1 else self.classes[0]

    def probabilities(self) -> Tensor:
        """Softmax of the scores over the classes, ``(C,)`` (CLIP's class probabilities)."""
        return self.scores.double().softmax(0).float()

    def score_of(self, name: str) -> float:
        """The score of class ``name``."""
        return float(self.scores[self.index(name)])

    def index(self, name: str) -> int:
        """The index of class ``name`` in ``classes`` (`InputError` for an unknown class)."""
        if name not in self.classes:
            raise InputError(f"{name!r} is not one of the classes: {', '.join(self.classes)}")
        return self.classes.index(name)

    def plot(self, **kwargs: Any) -> Any:
        """The image with the difference map of predicted vs `versus` and both classes' maps."""
        kwargs.setdefault("title", f"why {self.predicted!r} rather than {self.versus!r}")
        return self.contrast.plot(**kwargs)

    def _repr_html_(self) -> str:
        """Notebook display: `plot` beside the classes by score (score, probability)."""
        from dualex.decisions.contrast import _html_with_figure
        from dualex.plotting import html_table

        probs = self.probabilities()
        rows: list[tuple[str, Any]] = [("predicted", self.predicted), ("versus", self.versus),
                                       ("method", self.contrast.method)]  # fmt: skip
        rows += [(f"{self.classes[i]}: score (probability)", f"{float(self.scores[i]):.4g} ({float(probs[i]):.3f})")
                 for i in self.ranking[:10]]  # fmt: skip
        return _html_with_figure(self.plot, html_table(rows, caption="Zero-shot decision"))

    def __repr__(self) -> str:
        return (
            f"Decision(predicted={self.predicted!r}, versus={self.versus!r}, classes={len(self.classes)}, "
            f"templates={len(self.templates)}, method={self.contrast.method!r})"
        )


def zero_shot(
    model: Any,
    image: Any,
    classes: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    method: str = "ij",
    *,
    versus: str | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    **options: Any,
) -> Decision:
    """Classify ``image`` among ``classes`` with a prompt ensemble, and explain the decision.

    Args:
        model: A `DualEncoder`, a model name for `dualex.load`, or a supported module.
        image: One image (path, PIL image, array).
        classes: At least two class names.
        templates: Prompt templates with ``{}`` for the class name (default: the bare name).
        method: Explanation method of the two classes' prompts (`dualex.list_methods`).
        versus: Contrast the prediction with this class instead of the runner-up.
        batch_size: Prompts per text-tower pass when scoring.
        device: Move the model there first.
        **options: Options of the method.

    Returns:
        A `Decision`: ``scores`` equal the classifier's; ``contrast`` explains predicted vs ``versus``
        (2·J template explanations in one call, the image side computed once).
    """
    from dualex.methods import check_method_options, explain
    from dualex.models.registry import resolve_model

    check_method_options(method, options)
    classes = [str(c) for c in classes]
    templates = list(templates)
    if len(classes) < 2:
        raise InputError(f"a zero-shot decision needs at least two classes, got {len(classes)}")
    if len(set(classes)) != len(classes):
        raise InputError("the class names must be distinct")
    if not templates:
        raise InputError("templates must list at least one template")
    if isinstance(image, (list, tuple)):
        raise InputError("zero_shot classifies one image; call it once per image")
    if versus is not None and versus not in classes:
        raise InputError(f"versus={versus!r} is not one of the classes: {', '.join(classes)}")
    enc = resolve_model(model, device=device)
    J = len(templates)
    texts = prompts(classes, templates)
    with torch.no_grad():
        e_img = enc.tower("image").encode(enc.tower("image").prepare([image]).to(enc.device)).float()
        text = enc.tower("text")
        chunks = [text.prepare(texts[s : s + batch_size]).to(enc.device) for s in range(0, len(texts), batch_size)]
        e_txt = torch.cat([enc.tower("text").encode(t).float() for t in chunks]).reshape(len(classes), J, -1)
    cls_emb = torch.stack([class_embedding(e) for e in e_txt])  # (C, D)
    cosines = (torch.nn.functional.normalize(e_img, dim=-1) @ cls_emb.T)[0].cpu()
    scores = cosines * enc.logit_scale + enc.logit_bias
    weights = torch.tensor([ensemble_weight(e) for e in e_txt], dtype=torch.float32)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    top = classes[order[0]]
    other = versus if versus is not None else classes[order[1]]
    if other == top:
        raise InputError(f"versus={versus!r} is the predicted class; name another class to contrast it with")
    picked = [top, other]
    exs = explain(enc, image, [texts[classes.index(c) * J + j] for c in picked for j in range(J)], method, **options)
    explanations = {}
    for i, c in enumerate(picked):
        k = classes.index(c)
        explanations[c] = ensemble_explanation(
            exs[i * J : (i + 1) * J],
            float(weights[k]),
            score=float(scores[k]),
            cosine=float(cosines[k]),
            bias=enc.logit_bias,
            label=c,
        )
    con = Contrast(explanations[top], explanations[other], labels=(top, other), x_side="image")
    return Decision(
        classes=classes,
        templates=templates,
        scores=scores,
        cosines=cosines,
        weights=weights,
        contrast=con,
        versus=other,
        explanations=explanations,
    )


__all__ = ["DEFAULT_TEMPLATES", "Decision", "prompts", "zero_shot"]
