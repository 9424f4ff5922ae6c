"""`TrunkTower`: an image `Tower` over any `dualex.models.trunks.Trunk` (timm towers, ResNets, EfficientNet).

Parts. Games and perturbation methods remove parts *in input space*: the input canvas is cut into a
stated grid of pixel patches (``mask_grid``; by default the grid of the trunk's last feature map, e.g.
7 × 7 cells of 32 px for a 224-px ResNet or ConvNeXt, or the patch grid of a ViT-like trunk), and a
removed patch is filled with one colour before the stem runs (`dualex.models.parts.masked_pixels`), with
the same ``how=`` vocabulary as every image tower: ``"default"``/``"zeros"``/``"mean"`` (0 after
normalisation, the dataset mean colour) or ``"black"``. Because the stem sees the filled pixels, this is
exact for any trunk (overlapping convolutions included), at the cost of one stem pass per coalition.

Hidden positions. ``hidden(x, layer)`` gives the trunk's state entering unit ``layer`` as tokens
(`dualex.models.trunks`): for ViT-like trunks the prefix tokens and one token per patch (the mask grid);
for staged trunks that stage's feature map, whose grid depends on the layer. `parts_at` re-describes the
inputs for the hidden positions of a layer (grid and prefix), so that methods splitting at a layer
(``ij``, gradients) report maps on that layer's grid, each position standing for one stride × stride
cell of the input canvas.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import Tensor

from dualex.errors import InputError
from dualex.models.base import ImageInputs, SideInputs
from dualex.models.parts import image_reference, mask_image_patches, masked_pixels
from dualex.models.preprocess import ImagePipeline
from dualex.models.tower import Tower
from dualex.models.trunks import Trunk

if TYPE_CHECKING:
    from dualex.models.base import DualEncoder


class TrunkTower(Tower):
    """An image tower running a `Trunk` (see the module docstring).

    Args:
        owner: The dual encoder holding the trunk's weights.
        trunk: The split trunk.
        pipeline: Image preprocessing (resize, crop, normalise) giving the trunk's input size.
        mask_grid: ``(rows, cols)`` of the input-space patches that are the players; default: the grid
            of the trunk's last feature map (token trunks: their patch grid).
    """

    modality = "image"
    path_reference = "zeros"
    aligned_reference = "zeros"

    def __init__(
        self,
        owner: DualEncoder,
        trunk: Trunk,
        pipeline: ImagePipeline,
        *,
        mask_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(owner)
        self.trunk = trunk
        self.pipeline = pipeline
        if mask_grid is None:
            _, grid = trunk.layout(trunk.n_layers)
            self.token_trunk = trunk.probe()[0].kind == "tokens"
            mask_grid = grid
        else:
            self.token_trunk = False
        rows, cols = int(mask_grid[0]), int(mask_grid[1])
        H, W = trunk.image_size
        if rows < 1 or cols < 1 or rows > H or cols > W:
            raise InputError(f"mask grid {mask_grid} does not fit the {H}×{W} input of {self.label}")
        self.mask_grid = (rows, cols)

    @property
    def layer_unit(self) -> str:  # type: ignore[override]  # per trunk: blocks or stages
        """'block' for token trunks (ViTs), 'stage' for feature-map trunks (CNNs, Swin)."""
        return "block" if self.trunk.probe()[0].kind == "tokens" else "stage"

    @property
    def n_layers(self) -> int:
        """Number of trunk units (blocks or stages)."""
        return self.trunk.n_layers

    def prepare(self, raw: list[Any]) -> ImageInputs:
        """Runs the image pipeline and describes the images on the tower's masking grid.

        Args:
            raw: Images (PIL, arrays or paths).

        Returns:
            ImageInputs with (B, 3, H, W) pixels in the tower dtype on `mask_grid`.

        Raises:
            InputError: The pipeline's output size differs from the trunk's input size.
        """
        pixels, transforms, displays = self.pipeline(raw)
        if tuple(pixels.shape[-2:]) != self.trunk.image_size:
            raise InputError(
                f"the image pipeline gives {tuple(pixels.shape[-2:])} pixels but {self.label} takes "
                f"{self.trunk.image_size}; pass a pipeline (processor=) of that size"
            )
        n_prefix = self.trunk.layout(0)[0] if self.token_trunk else 0
        return ImageInputs(
            pixels=pixels.to(self.dtype),
            grid=self.mask_grid,
            n_prefix=n_prefix,
            transforms=transforms,
            display=displays,
        )

    def _check(self, inputs: SideInputs) -> ImageInputs:
        if not isinstance(inputs, ImageInputs):
            raise InputError(f"{self.label} needs ImageInputs, got {type(inputs).__name__}")
        px = inputs.pixels
        if px.dim() != 4 or px.shape[1] != 3 or tuple(px.shape[-2:]) != self.trunk.image_size:
            H, W = self.trunk.image_size
            raise InputError(
                f"{self.label} takes pixels of shape (B, 3, {H}, {W}), got {tuple(px.shape)}; "
                "prepare images with the model's prepare"
            )
        return inputs

    def parts_at(self, inputs: SideInputs, layer: int) -> SideInputs:
        """``inputs`` re-described for the hidden positions at ``layer``: that layer's grid and prefix."""
        im = self._check(inputs)
        n_prefix, grid = self.trunk.layout(self.check_layer(layer))
        if self.token_trunk and grid == im.grid and n_prefix == im.n_prefix:
            return im
        return replace(im, grid=grid, n_prefix=n_prefix, extra={})

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Hidden states entering trunk unit `layer`, of the pixels with recorded patch removals applied.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels.
            layer: Unit index.

        Returns:
            (B, T, W) states (feature maps flattened row-major, channels last).
        """
        im = self._check(inputs)
        return self.trunk.hidden(masked_pixels(im).to(self.dtype), self.check_layer(layer))

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Trunk units from `layer` and the head on (R, T, W) hidden states -> (R, D) embeddings."""
        return self.trunk.tail(hidden, self.check_layer(layer))

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """K copies of row 0 with the input-space patches where ``keep`` is False filled (``how``:
        ``"default"``/``"zeros"``/``"mean"`` or ``"black"``)."""
        return mask_image_patches(self._check(inputs), keep, how, self.pipeline.black())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the image reference of `kind` ('zeros', 'black', ...; see image_reference)."""
        return image_reference(self._check(inputs), kind, self.pipeline.black())
