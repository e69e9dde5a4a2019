"""Stage final_test (gated): train the configuration the report chose on all CV essays, score the locked test once.

Refuses unless metrics/report.json holds a decision or final_test.override is true.
Writes metrics/final_test.json, which no other stage reads.
"""

from aes.core.errors import stage_main
from aes.data.corpus import load_essays
from aes.data.params import load_params
from aes.data.splits import load_splits
from aes.holdout.final_evaluation import check_has_locked_test, chosen_model, run_final_test


@stage_main
def main() -> None:
    params, splits = load_params(), load_splits()
    check_has_locked_test(splits)
    choice = chosen_model(params)  # the gate, before any essay is read
    print(f"final_test: {choice['reason']}")
    result = run_final_test(params, load_essays(), splits)
    t = result["test"]
    print(f"locked test ({t['n']['essays']} essays, {t['n']['prompts']} prompts): model {result['model']}, "
          f"QWK {t['qwk']['pooled']}, worst prompt {t['qwk']['worst_prompt']}, RMSE {t['rmse']}")


if __name__ == "__main__":
    main()
