"""topics: the groups the splits keep whole, for prepare: prompts, or with `prepare.<dataset>.groups: topic`
clusters of prompts whose names the frozen `topic_model` finds alike (the prompts of the cleaned essays)."""

from aes.core.errors import stage_main
from aes.core.io import write_json
from aes.core.registry import TOPICS_JSON
from aes.data.clean import validate_and_clean
from aes.data.fetch import read_fetched
from aes.data.params import load_params
from aes.data.registry import dataset_of, prepare_settings
from aes.data.topics import NAME_MAX_TOKENS, groups_document
from aes.encoders.embedding import embed_texts


@stage_main
def main() -> None:
    params = load_params()
    dataset, settings = dataset_of(params), prepare_settings(params)
    essays, _ = validate_and_clean(read_fetched(dataset), settings, dataset, on_invalid=settings["invalid_rows"])

    def embed(names: list[str]):  # called for groups: topic only: groups: prompt loads no model
        return embed_texts(names, settings["topic_model"], NAME_MAX_TOKENS, batch_size=64, device="cpu")

    document = groups_document(settings, essays["prompt"].tolist(), embed)
    write_json(TOPICS_JSON, document)
    found = f"{len(set(document['topics'].values()))} topics of {len(document['topics'])} prompts" if "topics" in document else "prompts"
    print(f"{dataset.title}: the splits keep whole {found}")


if __name__ == "__main__":
    main()
