"""Give a Fashion-MNIST checkpoint the names of its ten classes (IDX labels 0-9), in place.

    python examples/fashion/name_classes.py checkpoints/pixelcnn-fashion.safetensors

New training runs do this with `arcli train ... --class-names` (examples/fashion/train_default.sh);
this script names the classes of a checkpoint trained before that option existed. The weights,
config, metrics and provenance are kept; the provenance records the renaming.
"""

import sys

from arcli.checkpoint import read_checkpoint, save_checkpoint

# The label order of Fashion-MNIST (Xiao, Rasul and Vollgraf 2017).
FASHION_CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    path = sys.argv[1]
    checkpoint = read_checkpoint(path)
    if [str(c) for c in checkpoint.data.get("classes", [])] != [str(i) for i in range(10)]:
        sys.exit(f"{path}: not a model of the ten Fashion-MNIST labels 0-9 (its classes: {checkpoint.data.get('classes')})")
    data = {**checkpoint.data, "class_names": FASHION_CLASSES}
    training = {**checkpoint.training, "class_names_added_by": "examples/fashion/name_classes.py"}
    save_checkpoint(path, checkpoint.model_name, checkpoint.config, checkpoint.tensors, data=data,
                    tokenizer=checkpoint.tokenizer, training=training, metrics=checkpoint.metrics)
    print(f"{path}: classes named {', '.join(FASHION_CLASSES)}", file=sys.stderr)


if __name__ == "__main__":
    main()
